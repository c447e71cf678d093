package share

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestDriveC(t *testing.T) {
	d := DriveC("/data/lab/x/wine")
	if d.HostPath != "/data/lab/x/wine/drive_c" || d.GuestPath != "/mnt/c" || d.Tag != "drive_c" || d.ReadOnly || !d.IsDriveC() {
		t.Fatalf("DriveC = %+v", d)
	}
	other := Share{HostPath: "/w", GuestPath: "/mnt/c"} // a user share at /mnt/c is not the prefix
	tests := []struct {
		shares []Share
		want   string
	}{
		{[]Share{{HostPath: "/s", GuestPath: "/mnt/lab", Tag: "lab-scratch"}, d}, "/data/lab/x/wine"},
		{[]Share{other}, ""},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := WinePrefix(tt.shares); got != tt.want {
			t.Errorf("WinePrefix(%+v) = %q, want %q", tt.shares, got, tt.want)
		}
	}
}

func TestTagged(t *testing.T) {
	in := []Share{{HostPath: "/a", GuestPath: "/a"}, {HostPath: "/c", GuestPath: "/mnt/c", Tag: "drive_c"}, {HostPath: "/b", GuestPath: "/b"}}
	var tags []string
	for _, s := range Tagged(in) {
		tags = append(tags, s.Tag)
	}
	if want := []string{"share0", "drive_c", "share2"}; !slices.Equal(tags, want) {
		t.Errorf("tags %q, want %q", tags, want)
	}
	if in[0].Tag != "" {
		t.Error("Tagged changed its argument")
	}
}

// The instance file's format (vm.Instance.Shares) stays what older labs wrote.
func TestJSON(t *testing.T) {
	b, err := json.Marshal(Share{HostPath: "/h", GuestPath: "/g", Tag: "t", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"host_path":"/h","guest_path":"/g","tag":"t","read_only":true}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
}
