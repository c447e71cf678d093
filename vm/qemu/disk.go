package qemu

import "strings"

// WithDisk adds a virtio-blk disk (the guest's /dev/vda for the first one) backed by
// a qcow2 file. Discards from the guest free space in the file.
func WithDisk(path string) Fn {
	return func(ids *IDAllocator, o *Options) error {
		if path == "" {
			return invalid("empty disk path")
		}
		id := ids.ID("disk")
		o.Args = append(o.Args,
			"-drive", "file="+escape(path)+",if=none,id="+id+",format=qcow2,discard=unmap,cache=writeback",
			"-device", "virtio-blk-pci,drive="+id)
		return nil
	}
}

// WithFwCfgFile hands the guest a file through QEMU's fw_cfg device under name
// ("opt/ORG/NAME", QEMU's rule for user entries); a Linux guest reads it, as root
// only, at /sys/firmware/qemu_fw_cfg/by_name/NAME/raw (module qemu_fw_cfg).
func WithFwCfgFile(name, path string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if !strings.HasPrefix(name, "opt/") || len(name) > 55 || strings.ContainsAny(name, ", ") {
			return invalid("fw_cfg name %q (want opt/ORG/NAME, at most 55 bytes, no commas or spaces)", name)
		}
		if path == "" {
			return invalid("empty fw_cfg file path")
		}
		o.Args = append(o.Args, "-fw_cfg", "name="+name+",file="+escape(path))
		return nil
	}
}
