package host

import (
	"strings"

	"lab/wire"
)

// EnvVar is one entry of LABENV, which has WSLENV's syntax: a colon-separated list of
// NAME or NAME/FLAGS entries.
//
// The flags keep WSL's meaning with the guest in WSL's (Linux) role and the host in
// Windows' role:
//
//	p  the value is a path: translated between guest and host paths
//	l  the value is a colon-separated list of paths, each translated
//	u  only when the host runs a guest program (host -> guest), WSL's "from Win32 to WSL"
//	w  only when the guest runs a host program (guest -> host), WSL's "from WSL to Win32"
//
// An entry with an unknown flag is skipped, as WSL does.
type EnvVar struct {
	Name            string
	Path, PathList  bool
	ToGuest, ToHost bool // which directions it crosses (both unless u or w narrows it)
}

// LabEnvName is the variable that names what crosses.
const LabEnvName = "LABENV"

// ParseLabEnv parses a LABENV value.
func ParseLabEnv(s string) []EnvVar {
	var out []EnvVar
	for _, entry := range strings.Split(s, ":") {
		name, flags, _ := strings.Cut(entry, "/")
		if name == "" || strings.ContainsAny(name, "=\x00") {
			continue
		}
		v := EnvVar{Name: name, ToGuest: true, ToHost: true}
		ok := true
		var u, w bool
		for _, f := range flags {
			switch f {
			case 'p':
				v.Path = true
			case 'l':
				v.PathList = true
			case 'u':
				u = true
			case 'w':
				w = true
			default:
				ok = false
			}
		}
		if !ok {
			continue
		}
		if u && !w {
			v.ToHost = false
		}
		if w && !u {
			v.ToGuest = false
		}
		out = append(out, v)
	}
	return out
}

// hostEnv builds a host program's environment: base, then the variables the guest sent
// that its LABENV lets cross to the host, with /p and /l values translated by translate.
//
// The relay parses the LABENV value itself (it always crosses) and lets through only the
// variables it names with a guest-to-host direction, whatever else the guest sent. A named
// variable the guest marks unset is removed from the result (WSL sends it as NAME= and Windows
// deletes the key).
func hostEnv(base []string, sent []wire.EnvVar, translate func(string) string) []string {
	var labenv *wire.EnvVar
	byName := map[string]wire.EnvVar{}
	for i, v := range sent {
		if v.Name == LabEnvName && labenv == nil {
			labenv = &sent[i]
			continue
		}
		if _, dup := byName[v.Name]; !dup {
			byName[v.Name] = v
		}
	}
	set := map[string]string{} // name -> value to set
	drop := map[string]bool{}  // names to remove
	var order []string
	if labenv != nil && labenv.Flags&wire.EnvUnset == 0 {
		set[LabEnvName] = labenv.Value
		order = append(order, LabEnvName)
		for _, v := range ParseLabEnv(labenv.Value) {
			if !v.ToHost || v.Name == LabEnvName {
				continue
			}
			got, ok := byName[v.Name]
			if !ok || got.Flags&wire.EnvUnset != 0 {
				if _, s := set[v.Name]; !s {
					drop[v.Name] = true
				}
				continue
			}
			val := got.Value
			switch {
			case v.PathList:
				parts := strings.Split(val, ":")
				for i, p := range parts {
					parts[i] = translate(p)
				}
				val = strings.Join(parts, ":")
			case v.Path:
				val = translate(val)
			}
			if _, dup := set[v.Name]; !dup {
				order = append(order, v.Name)
			}
			delete(drop, v.Name)
			set[v.Name] = val
		}
	}
	out := make([]string, 0, len(base)+len(order))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, s := set[k]; s || drop[k] {
			continue
		}
		out = append(out, kv)
	}
	for _, k := range order {
		out = append(out, k+"="+set[k])
	}
	return out
}
