package qemu

import (
	"errors"
	"testing"
)

// TestDiskGolden pins the argv of a disk-image machine (the Debian guest) in
// testdata/lab-disk.golden; -update rewrites it.
func TestDiskGolden(t *testing.T) {
	argv, err := Command(
		WithAccel("tcg"), WithSMP(2), WithMemory(1024),
		WithBIOS(QbootROM), WithKernel("/cache/debian/vmlinux"), WithInitrd("/cache/debian/initrd.img"),
		WithAppend("console=ttyS0", "root=/dev/vda", "rw"),
		WithDisk("/data/lab/default/disk.qcow2"),
		WithFwCfgFile("opt/lab/instance.tar", "/state/instance.tar"),
		WithSerialFile("/state/console.log"), WithQMPListener(3),
	)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "lab-disk", argv)
}

func TestDiskErrors(t *testing.T) {
	tests := []struct {
		name string
		fn   Fn
		want string
	}{
		{"empty disk", WithDisk(""), "qemu: invalid option: empty disk path"},
		{"fw_cfg name outside opt", WithFwCfgFile("lab/keys", "/k"), `qemu: invalid option: fw_cfg name "lab/keys" (want opt/ORG/NAME, at most 55 bytes, no commas or spaces)`},
		{"fw_cfg name with comma", WithFwCfgFile("opt/lab/a,b", "/k"), `qemu: invalid option: fw_cfg name "opt/lab/a,b" (want opt/ORG/NAME, at most 55 bytes, no commas or spaces)`},
		{"fw_cfg empty file", WithFwCfgFile("opt/lab/keys", ""), "qemu: invalid option: empty fw_cfg file path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Command(tt.fn)
			if !errors.Is(err, ErrInvalid) || err.Error() != tt.want {
				t.Fatalf("error = %v, want %s", err, tt.want)
			}
		})
	}
}
