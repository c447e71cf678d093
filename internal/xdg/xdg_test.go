package xdg

import "testing"

func TestDir(t *testing.T) {
	tests := []struct {
		kind       Kind
		env, value string
		home       string
		want       string
		wantErr    string
	}{
		{State, "XDG_STATE_HOME", "/xdg/state", "/home/u", "/xdg/state/lab", ""},
		{Cache, "XDG_CACHE_HOME", "/xdg/cache", "/home/u", "/xdg/cache/lab", ""},
		{Data, "XDG_DATA_HOME", "/xdg/data", "/home/u", "/xdg/data/lab", ""},
		{State, "XDG_STATE_HOME", "", "/home/u", "/home/u/.local/state/lab", ""},
		{Cache, "XDG_CACHE_HOME", "", "/home/u", "/home/u/.cache/lab", ""},
		{Data, "XDG_DATA_HOME", "", "/home/u", "/home/u/.local/share/lab", ""},
		// The spec: a relative path is invalid and ignored.
		{State, "XDG_STATE_HOME", "rel/state", "/home/u", "/home/u/.local/state/lab", ""},
		{Cache, "XDG_CACHE_HOME", "rel", "/home/u", "/home/u/.cache/lab", ""},
		{Data, "XDG_DATA_HOME", "./d", "/home/u", "/home/u/.local/share/lab", ""},
		{Cache, "XDG_CACHE_HOME", "", "", "", "no cache directory for lab: set XDG_CACHE_HOME or HOME: $HOME is not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String()+"/"+tt.value, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			t.Setenv("HOME", tt.home)
			got, err := Dir(tt.kind)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Dir(%v) = %q, %v; want error %q", tt.kind, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Dir(%v) = %q, %v; want %q", tt.kind, got, err, tt.want)
			}
		})
	}
}
