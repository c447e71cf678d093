package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"lab/internal/fsutil"
	"lab/internal/progress"
)

// Package is one Debian package the image was built from.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`

	depends []string // first alternative of each Depends/Pre-Depends group
}

// debFile is the name apt-get download gives the package's file.
func (p Package) debFile() string {
	// apt escapes ':' (epochs) as %3a; url.PathEscape keeps '+' and '~'.
	v := strings.ReplaceAll(url.PathEscape(p.Version), ":", "%3a")
	return fmt.Sprintf("%s_%s_%s.deb", p.Name, v, p.Arch)
}

// parseControl splits Debian control data (apt-cache show output, a
// DEBIAN/control file) into stanzas of field -> value. Continuation lines
// are joined with "\n". Field names are matched case-sensitively as apt
// prints them.
func parseControl(data []byte) []map[string]string {
	var out []map[string]string
	cur := map[string]string{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur, last = map[string]string{}, ""
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				cur[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.TrimSpace(k)
			cur[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// parseDepends returns the first alternative of each group of a Depends
// field ("libc6 (>= 2.34), libfoo1 | libbar1, libz:any").
func parseDepends(field string) []string {
	var names []string
	for _, group := range strings.Split(field, ",") {
		alt, _, _ := strings.Cut(group, "|")
		name := strings.TrimSpace(alt)
		if i := strings.IndexAny(name, " (["); i >= 0 {
			name = name[:i]
		}
		name, _, _ = strings.Cut(name, ":")
		if name != "" {
			names = append(names, name)
		}
	}
	return names
}

// apt runs the host's apt tools. It never names an archive: apt reads the
// host's own sources.
type apt struct {
	progress *progress.Progress
	arch     *archSpec // the guest's architecture; nil: amd64
	opts     []string  // -o options every apt command gets (foreignApt sets them)
}

// command runs an apt tool with the apt's options.
func (a *apt) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, append(append([]string(nil), a.opts...), args...)...)
}

func (a *apt) spec() *archSpec {
	if a.arch == nil {
		return archSpecs[AMD64]
	}
	return a.arch
}

var errNoApt = errors.New("this host has no apt-get/apt-cache")

func (a *apt) available() error {
	for _, t := range []string{"apt-cache", "apt-get"} {
		if _, err := exec.LookPath(t); err != nil {
			return errNoApt
		}
	}
	return nil
}

// show returns the candidate version of each named package that apt
// knows; unknown names are left out.
func (a *apt) show(ctx context.Context, names []string) (map[string]Package, error) {
	args := append([]string{"show", "--no-all-versions"}, names...)
	cmd := a.command(ctx, "apt-cache", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		return nil, fmt.Errorf("apt-cache show: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	pkgs := map[string]Package{}
	for _, st := range parseControl(out) {
		p := Package{Name: st["Package"], Version: st["Version"], Arch: st["Architecture"], SHA256: st["SHA256"]}
		p.Size, _ = strconv.ParseInt(st["Size"], 10, 64)
		if p.Name == "" || p.Version == "" || p.Arch == "" {
			continue
		}
		p.depends = append(parseDepends(st["Pre-Depends"]), parseDepends(st["Depends"])...)
		// On multiarch hosts prefer the native architecture's stanza.
		if old, dup := pkgs[p.Name]; !dup || (!a.nativeArch(old.Arch) && a.nativeArch(p.Arch)) {
			pkgs[p.Name] = p
		}
	}
	return pkgs, nil
}

// nativeArch reports whether a package of architecture arch runs in the guest.
func (a *apt) nativeArch(arch string) bool { return arch == a.spec().name || arch == "all" }

// libPackage matches the names of Debian's shared-library packages, the
// only dependencies followed when resolving a recipe: the image takes just
// the ELF files it needs from them.
var libPackage = regexp.MustCompile(`^(lib[a-z0-9].*|zlib1g)$`)

// skipPackage lists library packages that ship no shared objects the
// image's programs load (PAM modules and configuration).
var skipPackage = map[string]bool{"libpam-modules": true, "libpam-modules-bin": true, "libpam-runtime": true}

// resolution is the outcome of resolve, cached per apt state.
type resolution struct {
	Packages []Package `json:"packages"`
	Kernel   string    `json:"kernel,omitempty"` // the linux-image-VERSION package, if asked for
}

// resolve returns the candidate versions of roots and of the library
// packages they depend on, transitively, and with withKernel the versioned
// kernel package apt would install. apt-cache is slow (about a second a
// call on hosts that keep no binary cache), so the answer is cached under
// cacheDir for as long as apt's configuration, lists and dpkg status stay
// the same: a new `apt-get update` gives a new answer. When apt knows none
// of the roots its lists are probably empty: as root it runs apt-get update
// once (and says so); otherwise it says what to run.
func (a *apt) resolve(ctx context.Context, cacheDir string, roots []string, withKernel bool) (*resolution, error) {
	// kernelMeta is the package apt installs for "the current kernel" (linux-image-amd64);
	// it depends on the versioned linux-image-VERSION package.
	kernelMeta := a.spec().kernelMeta
	if withKernel {
		roots = append(append([]string(nil), roots...), kernelMeta)
	}
	stamp, err := a.stamp(ctx)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(stamp + "\n" + strings.Join(roots, " ")))
	cacheFile := filepath.Join(cacheDir, "apt", "resolve-"+hex.EncodeToString(h[:12])+".json")
	if b, err := os.ReadFile(cacheFile); err == nil {
		var r resolution
		if json.Unmarshal(b, &r) == nil && len(r.Packages) > 0 {
			return &r, nil
		}
	}
	graph, err := a.depends(ctx, roots)
	if err != nil {
		return nil, err
	}
	if m := missingNodes(roots, graph); len(m) > 0 {
		if os.Geteuid() != 0 && len(a.opts) == 0 { // a foreign arch's private lists need no root
			return nil, fmt.Errorf("apt cannot locate package(s) %s: run 'sudo apt-get update' (and check that the host's apt sources include Debian's main component)", strings.Join(m, ", "))
		}
		a.progress.Line("apt does not know %s: running apt-get update (as root)", strings.Join(m, ", "))
		cmd := a.command(ctx, "apt-get", "update", "-q")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get update: %w: %s", err, lastLines(out, 3))
		}
		if graph, err = a.depends(ctx, roots); err != nil {
			return nil, err
		}
		if m := missingNodes(roots, graph); len(m) > 0 {
			return nil, fmt.Errorf("apt cannot locate package(s) %s even after apt-get update: check the host's apt sources", strings.Join(m, ", "))
		}
		if stamp, err = a.stamp(ctx); err != nil {
			return nil, err
		}
		h = sha256.Sum256([]byte(stamp + "\n" + strings.Join(roots, " ")))
		cacheFile = filepath.Join(cacheDir, "apt", "resolve-"+hex.EncodeToString(h[:12])+".json")
	}
	res := &resolution{}
	want := map[string]bool{}
	queue := []string{}
	for _, r := range roots {
		if r == kernelMeta {
			for _, d := range graph[r] {
				if strings.HasPrefix(d, "linux-image-") {
					res.Kernel = d
					break
				}
			}
			if res.Kernel == "" {
				return nil, fmt.Errorf("apt's %s depends on no linux-image-VERSION package: pass --kernel and --modules", kernelMeta)
			}
			r = res.Kernel
		}
		if !want[r] {
			want[r] = true
			queue = append(queue, r)
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, d := range graph[n] {
			if want[d] || skipPackage[d] || !libPackage.MatchString(d) {
				continue
			}
			if _, known := graph[d]; !known {
				continue // virtual
			}
			want[d] = true
			queue = append(queue, d)
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	got, err := a.show(ctx, names)
	if err != nil {
		return nil, err
	}
	if m := missing(names, got); len(m) > 0 {
		return nil, fmt.Errorf("apt-cache show has no candidate version of %s: check the host's apt sources and pinning", strings.Join(m, ", "))
	}
	for _, n := range names {
		res.Packages = append(res.Packages, got[n])
	}
	if b, err := json.Marshal(res); err == nil {
		os.MkdirAll(filepath.Dir(cacheFile), 0o755)
		fsutil.WriteFile(cacheFile, b, 0o644)
	}
	return res, nil
}

// depends returns the dependency graph below roots as apt-cache prints it
// (package -> names in Depends and PreDepends, alternatives included).
// Virtual packages appear as names without an entry of their own.
func (a *apt) depends(ctx context.Context, roots []string) (map[string][]string, error) {
	args := append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}, roots...)
	cmd := a.command(ctx, "apt-cache", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && len(out) == 0 && !strings.Contains(stderr.String(), "No packages found") {
		return nil, fmt.Errorf("apt-cache depends: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return parseAptDepends(out), nil
}

// parseAptDepends reads `apt-cache depends` output: a package name on its
// own line, then indented "Depends: NAME" lines (" |Depends:" marks an
// alternative); "<name>" is a virtual package.
func parseAptDepends(out []byte) map[string][]string {
	graph := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			cur = strings.TrimSpace(line)
			if cur == "" || strings.HasPrefix(cur, "<") {
				cur = "" // a virtual package: its providers follow, not needed
				continue
			}
			if _, ok := graph[cur]; !ok {
				graph[cur] = nil
			}
			continue
		}
		if cur == "" {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(strings.TrimLeft(line, " |")), ":")
		if !ok || (k != "Depends" && k != "PreDepends") {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || strings.HasPrefix(v, "<") {
			continue
		}
		v, _, _ = strings.Cut(v, ":") // name:any
		if v = strings.TrimSpace(v); v != "" {
			graph[cur] = append(graph[cur], v)
		}
	}
	return graph
}

func missingNodes(names []string, graph map[string][]string) []string {
	var m []string
	for _, n := range names {
		if _, ok := graph[n]; !ok {
			m = append(m, n)
		}
	}
	return m
}

// stamp identifies the state apt answers from: its configuration, the
// package lists and dpkg's status file.
func (a *apt) stamp(ctx context.Context) (string, error) {
	out, err := a.command(ctx, "apt-config", "dump").Output()
	if err != nil {
		return "", fmt.Errorf("apt-config dump: %w", err)
	}
	h := sha256.New()
	h.Write(out)
	cfg := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok {
			cfg[k] = strings.TrimSuffix(strings.Trim(v, "\";"), "\"")
		}
	}
	join := func(parts ...string) string {
		p := "/"
		for _, s := range parts {
			if strings.HasPrefix(s, "/") {
				p = s
			} else {
				p = filepath.Join(p, s)
			}
		}
		return p
	}
	root := cfg["Dir"]
	if root == "" {
		root = "/"
	}
	lists := join(root, orDefault(cfg["Dir::State"], "var/lib/apt"), orDefault(cfg["Dir::State::lists"], "lists/"))
	status := join(root, orDefault(cfg["Dir::State::status"], "/var/lib/dpkg/status"))
	etc := join(root, orDefault(cfg["Dir::Etc"], "etc/apt"))
	for _, dir := range []string{lists, etc, filepath.Join(etc, "preferences.d"), filepath.Join(etc, "sources.list.d")} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if st, err := e.Info(); err == nil && !st.IsDir() {
				fmt.Fprintf(h, "%s/%s %d %d\n", dir, e.Name(), st.Size(), st.ModTime().UnixNano())
			}
		}
	}
	if st, err := os.Stat(status); err == nil {
		fmt.Fprintf(h, "%s %d %d\n", status, st.Size(), st.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func missing(names []string, got map[string]Package) []string {
	var m []string
	for _, n := range names {
		if _, ok := got[n]; !ok {
			m = append(m, n)
		}
	}
	return m
}

// download makes sure dir holds each package's .deb with the expected
// SHA256, fetching the missing ones with apt-get download.
func (a *apt) download(ctx context.Context, dir string, pkgs []Package) error {
	var need []Package
	var total int64
	for _, p := range pkgs {
		if ok, _ := fileHasSHA256(filepath.Join(dir, p.debFile()), p.SHA256); !ok {
			need = append(need, p)
			total += p.Size
		}
	}
	if len(need) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := []string{"download", "-q", "-o", "APT::Status-Fd=3"}
	if os.Geteuid() == 0 {
		// apt's _apt user cannot write into root's cache dir: download as
		// root instead of printing a warning about it.
		args = append(args, "-o", "APT::Sandbox::User=root")
	}
	for _, p := range need {
		args = append(args, p.Name+"="+p.Version)
	}
	cmd := a.command(ctx, "apt-get", args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.ExtraFiles = []*os.File{pw}
	bar := a.progress.Bar(fmt.Sprintf("downloading %d packages", len(need)), total, "bytes")
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			// dlstatus:N:PERCENT:TEXT
			f := strings.SplitN(sc.Text(), ":", 4)
			if len(f) >= 3 && f[0] == "dlstatus" {
				if pct, err := strconv.ParseFloat(f[2], 64); err == nil {
					bar.Set(int64(pct / 100 * float64(total)))
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err = cmd.Start()
	pw.Close()
	if err == nil {
		err = cmd.Wait()
	}
	pr.Close()
	<-done
	bar.Finish()
	if err != nil {
		msg := lastLines(out.Bytes(), 3)
		if strings.Contains(msg, "Unable to locate") || strings.Contains(msg, "Can't find a source") {
			msg += " (run 'sudo apt-get update')"
		}
		return fmt.Errorf("apt-get download: %w: %s", err, msg)
	}
	for _, p := range need {
		ok, err := fileHasSHA256(filepath.Join(dir, p.debFile()), p.SHA256)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("apt-get download %s=%s did not leave %s in %s", p.Name, p.Version, p.debFile(), dir)
		}
		if err != nil {
			return fmt.Errorf("apt-get download %s: %w", p.Name, err)
		}
		if !ok {
			return fmt.Errorf("apt-get download %s=%s: the file's SHA256 is not the archive's", p.Name, p.Version)
		}
	}
	return nil
}

func fileHasSHA256(path, want string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if want == "" {
		return true, nil // apt gave no checksum: trust the file apt fetched
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == want, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
