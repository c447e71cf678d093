package images

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"lab/internal/fsutil"
	"lab/internal/progress"
	"lab/internal/xdg"
)

// Options configure Build.
type Options struct {
	CacheDir string    // zero: $XDG_CACHE_HOME/lab or ~/.cache/lab
	Kernel   string    // optional: a kernel (bzImage/vmlinuz or vmlinux); zero: from the host's apt sources
	Modules  string    // optional: the /lib/modules/VERSION dir matching Kernel
	Rebuild  bool      // build again even when the cache has the image (downloads are kept)
	Progress io.Writer // nil: silent; a terminal: progress bars; otherwise plain lines

	// SSHServer is Dropbear or OpenSSH; zero: DefaultSSHServer.
	SSHServer string
	// Arch is the guest's architecture, AMD64 or ARM64; zero: DefaultArch (the host's).
	// Another architecture's packages come from the host's own apt sources through a
	// private apt state in the cache (foreignApt).
	Arch string
	// Distro is DistroInitramfs or DistroDebian; zero: DistroInitramfs.
	Distro string
}

// DefaultSSHServer is the SSH server of the default image: OpenSSH, because
// Debian 12's dropbear (2022.83) aborts the handshake with Go's x/crypto/ssh
// clients unless they restrict HostKeyAlgorithms to the key it has
// (mkj/dropbear#219); dropbear's gains (about 0.2 s per new connection,
// 4 MB) are small. docs/DESIGN.md has the measurements.
const DefaultSSHServer = OpenSSH

// Image is a built guest image in the cache.
type Image struct {
	Dir           string   // cache dir of this build
	Kernel        string   // amd64: uncompressed vmlinux with the PVH note (boot with qboot: -bios /usr/share/qemu/qboot.rom); arm64: the uncompressed Image
	KernelVersion string   // e.g. "6.1.0-56-amd64"
	Initrd        string   // base initramfs, a raw (uncompressed) newc cpio
	Cmdline       string   // the kernel command line the image's init expects
	Manifest      Manifest // also written as manifest.json in Dir
	Distro        string   // zero: DistroInitramfs
	Disk          string   // DistroDebian: the base root disk (qcow2); machines boot on an overlay of it
}

// Manifest says what an image holds and where it came from.
type Manifest struct {
	Recipe        string         `json:"recipe"`
	Arch          string         `json:"arch,omitempty"` // zero in images built before arm64 guests: amd64
	Key           string         `json:"key"`
	Distro        string         `json:"distro,omitempty"`    // zero: the initramfs image
	DiskSize      int64          `json:"disk_size,omitempty"` // the Debian image's base qcow2, bytes
	SSHServer     string         `json:"ssh_server"`
	KernelVersion string         `json:"kernel_version"`
	KernelOrigin  string         `json:"kernel_origin"`
	KernelPVH     bool           `json:"kernel_pvh"` // false: Kernel is a bzImage (no PVH note found)
	Cmdline       string         `json:"cmdline"`
	Packages      []Package      `json:"packages"`
	Modules       []string       `json:"modules"` // load order
	Files         []ManifestFile `json:"files"`
	InitrdSize    int64          `json:"initrd_size"`
	Built         time.Time      `json:"built"`
	BuildSeconds  float64        `json:"build_seconds"` // excluding downloads
}

// ManifestFile is one entry of the initramfs.
type ManifestFile struct {
	Path    string `json:"path"`
	Mode    string `json:"mode"`
	Size    int    `json:"size,omitempty"`
	Link    string `json:"link,omitempty"`
	Package string `json:"package,omitempty"`
}

// DefaultCmdline is the kernel command line of the image; callers append
// their own words (lab.mount=TAG:PATH, ...). The tuning words trim about a
// second off a TCG boot (research/images.md).
const DefaultCmdline = "console=ttyS0 quiet panic=-1 cryptomgr.notests=1 mitigations=off no_timer_check tsc=reliable"

// Build returns the guest image for opts, building it unless the cache
// already holds it. Packages come from the host's apt sources
// (apt-get download, no root needed, nothing installed on the host);
// downloaded .debs stay in the cache.
func Build(ctx context.Context, opts Options) (*Image, error) {
	img, err := build(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	return img, nil
}

func build(ctx context.Context, opts Options) (*Image, error) {
	switch opts.Distro {
	case "", DistroInitramfs:
	case DistroDebian:
		if a, err := NormalizeArch(opts.Arch); err != nil || a != AMD64 {
			return nil, fmt.Errorf("the Debian image is built for amd64 guests only (asked: %s)", opts.Arch)
		}
		return buildDebian(ctx, opts)
	default:
		return nil, fmt.Errorf("unknown distro %q (want %s)", opts.Distro, strings.Join(Distros, " or "))
	}
	spec, err := archOf(opts.Arch)
	if err != nil {
		return nil, err
	}
	pr := progress.New(opts.Progress)
	server := opts.SSHServer
	if server == "" {
		server = DefaultSSHServer
	}
	rc, err := newRecipe(server)
	if err != nil {
		return nil, err
	}
	rc.modules = spec.modules
	cache := opts.CacheDir
	if cache == "" {
		if cache, err = xdg.Dir(xdg.Cache); err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	lock, err := lockCache(ctx, cache, pr)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()

	// Which kernel.
	var ks *kernelSource
	switch {
	case opts.Kernel != "":
		if ks, err = kernelFromFlags(opts.Kernel, opts.Modules); err != nil {
			return nil, err
		}
	case opts.Modules != "":
		return nil, errors.New("--modules needs --kernel")
	}
	a := &apt{progress: pr, arch: spec}
	if err := a.available(); err != nil {
		// A cache copied from another host still serves its images.
		if ks == nil && !opts.Rebuild {
			if img, ok := newestImage(cache, server, spec.name); ok {
				pr.Line("%v: using the cached image %s built %s", err, img.Dir, img.Manifest.Built.Format(time.RFC3339))
				return img, nil
			}
		}
		return nil, fmt.Errorf("%w: lab builds the guest's userland from Debian packages (%s) with apt-get download: run it on a Debian or Ubuntu host (--kernel and --modules replace only the linux-image package)", err, strings.Join(rc.packages, ", "))
	}
	if spec.foreign() {
		if err := foreignApt(ctx, a, cache); err != nil {
			return nil, err
		}
	}
	ks, res, err := resolvePackages(ctx, a, cache, rc, ks)
	if err != nil {
		return nil, err
	}
	pkgs, kernelPkg := res.Packages, res.Kernel
	debDir := filepath.Join(cache, "debs")
	if err := a.download(ctx, debDir, pkgs); err != nil {
		return nil, err
	}
	start := time.Now()

	key, err := cacheKey(rc, spec, server, pkgs, ks)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "images", key)
	if !opts.Rebuild {
		if img, err := loadImage(dir); err == nil {
			pr.Line("image %s is up to date", dir)
			return img, nil
		}
	}

	// Kernel and userland are unpacked in parallel.
	var kernelDir string
	var t *tree
	g, gctx := errgroup.WithContext(ctx)
	byName := map[string]Package{}
	for _, p := range pkgs {
		byName[p.Name] = p
	}
	var total int64
	for _, p := range pkgs {
		total += p.Size
	}
	if ks == nil && !opts.Rebuild {
		kp := byName[kernelPkg]
		if _, err := os.Stat(filepath.Join(kernelPkgDir(cache, kp), ".complete")); err == nil {
			total -= kp.Size // unpacked already
		}
	}
	// One bar for both jobs: two bars on one terminal line would garble.
	bar := pr.Bar(fmt.Sprintf("unpacking %d packages", len(pkgs)), total, "bytes")
	if ks == nil {
		kp := byName[kernelPkg]
		kernelDir = kernelPkgDir(cache, kp)
		if opts.Rebuild {
			os.RemoveAll(kernelDir)
		}
		g.Go(func() error {
			// vmlinux is extracted while the modules are unpacked.
			kfile := filepath.Join(kernelDir, spec.kernelFile)
			vmTmp := kernelDir + "." + spec.kernelFile + ".tmp"
			vmErr := make(chan error, 1)
			started := false
			var err error
			ks, err = unpackKernelDeb(gctx, filepath.Join(debDir, kp.debFile()), kernelDir, bar.Add, func(data []byte) {
				started = true
				go func() { vmErr <- spec.extractKernel(gctx, data, vmTmp) }()
			})
			if started {
				if e := <-vmErr; err == nil && e != nil {
					err = fmt.Errorf("extracting the kernel: %w", e)
				}
				if err == nil {
					err = os.Rename(vmTmp, kfile)
				}
				os.Remove(vmTmp)
			}
			if err == nil {
				ks.Origin = fmt.Sprintf("package %s %s", kp.Name, kp.Version)
				err = ensureVmlinux(gctx, spec, ks, kernelDir, false)
			}
			return err
		})
	} else {
		id, _ := kernelIdentity(ks)
		kernelDir = filepath.Join(cache, "kernels", "file-"+id[:20])
		if opts.Rebuild {
			os.RemoveAll(kernelDir)
		}
		g.Go(func() error { return ensureVmlinux(gctx, spec, ks, kernelDir, opts.Rebuild) })
	}
	g.Go(func() error {
		var err error
		t, err = unpackTree(gctx, debDir, pkgs, kernelPkg, bar.Add)
		return err
	})
	err = g.Wait()
	bar.Finish()
	if err != nil {
		return nil, err
	}

	// Contents.
	ms, err := openModules(ks.ModulesDir)
	if err != nil {
		return nil, err
	}
	mods, err := ms.closure(rc.modules)
	if err != nil {
		return nil, err
	}
	progs, err := t.closure(rc.programs)
	if err != nil {
		return nil, err
	}
	applets, err := busyboxApplets(t, spec, cache)
	if err != nil {
		pr.Line("warning: %v; the guest installs busybox's applets at boot instead", err)
	}
	entries := map[string]File{}
	pkgOf := map[string]string{}
	for _, f := range busyboxLinks(applets) {
		entries[f.Path] = f
		pkgOf[f.Path] = "busybox-static"
	}
	for _, f := range t.files(progs) {
		entries[f.Path] = f
		pkgOf[f.Path] = t.nodes[f.Path].pkg
	}
	modNames := make([]string, len(mods))
	for i, m := range mods {
		p := "/lib/modules/" + ks.Version + "/" + m.Path
		entries[p] = File{Path: p, Mode: 0o644, Data: m.Data}
		modNames[i] = m.Name
	}
	for _, f := range rc.baseFiles(ks.Version, mods) {
		entries[f.Path] = f
		delete(pkgOf, f.Path)
	}
	files := make([]File, 0, len(entries))
	for _, f := range entries {
		files = append(files, f)
	}
	sortFiles(files)

	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var size int64
	for _, f := range files {
		size += int64(len(f.Data))
	}
	bar = pr.Bar("packing initramfs", size, "bytes")
	initrd := filepath.Join(tmp, "initrd.cpio")
	out, err := os.Create(initrd)
	if err != nil {
		return nil, err
	}
	cw := &countingWriter{w: out, fn: bar.Add}
	err = WriteCPIO(cw, files)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	bar.Finish()
	if err != nil {
		return nil, err
	}
	if err := linkOrCopy(filepath.Join(kernelDir, spec.kernelFile), filepath.Join(tmp, spec.kernelFile)); err != nil {
		return nil, err
	}
	pvh := false
	if spec.name == AMD64 {
		if pvh, err = hasPVHNote(filepath.Join(tmp, "vmlinux")); err != nil {
			return nil, fmt.Errorf("vmlinux: %w", err)
		}
	}
	if !pvh && spec.name == AMD64 {
		// QEMU boots an ELF kernel only through the PVH note: use the
		// bzImage itself, slower but bootable.
		pr.Line("warning: %s has no PVH entry note: booting the compressed kernel (slower)", ks.Image)
		os.Remove(filepath.Join(tmp, "vmlinux"))
		if err := linkOrCopy(ks.Image, filepath.Join(tmp, "vmlinux")); err != nil {
			return nil, err
		}
	}
	m := Manifest{
		Recipe: recipeVersion, Arch: spec.name, Key: key, SSHServer: server,
		KernelVersion: ks.Version, KernelOrigin: ks.Origin, KernelPVH: pvh,
		Cmdline: spec.cmdline, Packages: pkgs, Modules: modNames,
		InitrdSize: cw.n, Built: time.Now().UTC().Truncate(time.Second),
		BuildSeconds: time.Since(start).Seconds(),
	}
	for _, f := range files {
		m.Files = append(m.Files, ManifestFile{Path: f.Path, Mode: f.Mode.String(), Size: len(f.Data), Link: f.Linkname, Package: pkgOf[f.Path]})
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), append(mj, '\n'), 0o644); err != nil {
		return nil, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	pr.Line("built %s (%s, %d files, initramfs %.1f MB, kernel %s) in %.1fs", dir, spec.name, len(files), float64(cw.n)/1e6, ks.Version, m.BuildSeconds)
	return loadImage(dir)
}

// resolvePackages asks apt's metadata (nothing is downloaded) for the packages'
// versions and checksums, and the kernel package unless ks is set; without a kernel
// package it falls back to the host's kernel.
func resolvePackages(ctx context.Context, a *apt, cache string, rc *recipe, ks *kernelSource) (*kernelSource, *resolution, error) {
	pr := a.progress
	wantKernel := ks == nil
	pr.Line("resolving packages")
	res, err := a.resolve(ctx, cache, rc.packages, wantKernel)
	if err != nil && wantKernel && !a.spec().foreign() {
		// No kernel package in apt's sources: the host's own kernel will do
		// when both its image and its modules are there.
		if hk, ok := hostKernel(); ok {
			pr.Line("no kernel package from apt (%v): using the host's %s", err, hk.Image)
			ks, wantKernel = hk, false
			res, err = a.resolve(ctx, cache, rc.packages, false)
		} else {
			err = fmt.Errorf("%w (or pass --kernel and --modules)", err)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return ks, res, nil
}

// cacheKey is the image's cache key: recipe, architecture, packages (by SHA256), kernel,
// command line. The architecture line is written for non-amd64 guests only, so that
// the amd64 keys (and CI caches saved under them) stay what they were before arm64.
func cacheKey(rc *recipe, spec *archSpec, server string, pkgs []Package, ks *kernelSource) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n%q\n", recipeVersion, server, spec.cmdline, rcS, rc.inittab, rc.modules)
	if spec.name != AMD64 {
		fmt.Fprintf(h, "arch %s\n", spec.name)
	}
	for _, f := range rc.extra {
		fmt.Fprintf(h, "%s %v %s %x\n", f.Path, f.Mode, f.Linkname, sha256.Sum256(f.Data))
	}
	for _, p := range pkgs {
		fmt.Fprintf(h, "pkg %s %s %s %s\n", p.Name, p.Version, p.Arch, p.SHA256)
	}
	if ks != nil {
		id, err := kernelIdentity(ks)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "kernel %s\n", id)
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

// Key returns the cache key of the image Build would build or reuse with opts, from
// apt's metadata, without downloading or building anything: CI caches
// $XDG_CACHE_HOME/lab under it (lab image key). It needs apt-get, as a build does.
func Key(ctx context.Context, opts Options) (string, error) {
	key, err := imageKey(ctx, opts)
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	return key, nil
}

func imageKey(ctx context.Context, opts Options) (string, error) {
	if opts.Distro == DistroDebian {
		sources, err := debianSources(ctx)
		if err != nil {
			return "", err
		}
		return debianKey(sources), nil
	}
	server := opts.SSHServer
	if server == "" {
		server = DefaultSSHServer
	}
	spec, err := archOf(opts.Arch)
	if err != nil {
		return "", err
	}
	rc, err := newRecipe(server)
	if err != nil {
		return "", err
	}
	rc.modules = spec.modules
	cache := opts.CacheDir
	if cache == "" {
		if cache, err = xdg.Dir(xdg.Cache); err != nil {
			return "", fmt.Errorf("images: %w", err)
		}
	}
	var ks *kernelSource
	switch {
	case opts.Kernel != "":
		if ks, err = kernelFromFlags(opts.Kernel, opts.Modules); err != nil {
			return "", err
		}
	case opts.Modules != "":
		return "", errors.New("--modules needs --kernel")
	}
	a := &apt{progress: progress.New(opts.Progress), arch: spec}
	if err := a.available(); err != nil {
		return "", fmt.Errorf("%w: the image key comes from apt's package metadata", err)
	}
	if spec.foreign() {
		if err := foreignApt(ctx, a, cache); err != nil {
			return "", err
		}
	}
	ks, res, err := resolvePackages(ctx, a, cache, rc, ks)
	if err != nil {
		return "", err
	}
	return cacheKey(rc, spec, server, res.Packages, ks)
}

// kernelPkgDir is where a kernel package is unpacked in the cache.
func kernelPkgDir(cache string, p Package) string {
	return filepath.Join(cache, "kernels", p.Name+"_"+strings.ReplaceAll(p.Version, ":", "_"))
}

// unpackTree unpacks the userland packages (all but skip) in memory.
func unpackTree(ctx context.Context, debDir string, pkgs []Package, skip string, progress func(int64)) (*tree, error) {
	t := newTree()
	for _, p := range pkgs {
		if p.Name == skip {
			continue
		}
		err := walkDeb(ctx, filepath.Join(debDir, p.debFile()), progress, func(h *tar.Header, r io.Reader) error {
			if strings.HasPrefix(h.Name, "./usr/share/") { // docs, man pages, locales
				return nil
			}
			return t.add(p.Name, h, r)
		})
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

// newestImage finds the most recently built complete image for server and arch
// in the cache.
func newestImage(cache, server, arch string) (*Image, bool) {
	dirs, _ := filepath.Glob(filepath.Join(cache, "images", "*"))
	var best *Image
	for _, d := range dirs {
		img, err := loadImage(d)
		if err != nil || img.Manifest.SSHServer != server || img.Arch() != arch {
			continue
		}
		if best == nil || img.Manifest.Built.After(best.Manifest.Built) {
			best = img
		}
	}
	return best, best != nil
}

// loadImage reads a complete image dir.
func loadImage(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	kfile := "vmlinux"
	if s, ok := archSpecs[m.Arch]; ok {
		kfile = s.kernelFile
	}
	img := &Image{
		Dir: dir, Kernel: filepath.Join(dir, kfile), KernelVersion: m.KernelVersion,
		Initrd: filepath.Join(dir, "initrd.cpio"), Cmdline: m.Cmdline, Manifest: m,
	}
	for _, p := range []string{img.Kernel, img.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// ensureVmlinux extracts the bootable kernel (amd64: vmlinux) into kernelDir once.
func ensureVmlinux(ctx context.Context, spec *archSpec, ks *kernelSource, kernelDir string, rebuild bool) error {
	out := filepath.Join(kernelDir, spec.kernelFile)
	if _, err := os.Stat(out); err == nil && !rebuild {
		return nil
	}
	if err := os.MkdirAll(kernelDir, 0o755); err != nil {
		return err
	}
	if spec.name == AMD64 {
		return extractVmlinux(ctx, ks.Image, out)
	}
	data, err := os.ReadFile(ks.Image)
	if err != nil {
		return err
	}
	if err := spec.extractKernel(ctx, data, out); err != nil {
		return fmt.Errorf("%s: %w", ks.Image, err)
	}
	return nil
}

// kernelIdentity names a kernel given by path: its content hash and the
// modules dir with its modules.order (or builtin) timestamp.
func kernelIdentity(ks *kernelSource) (string, error) {
	f, err := os.Open(ks.Image)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	fmt.Fprintf(h, "%s\n", ks.ModulesDir)
	for _, n := range []string{"modules.order", "modules.builtin", "modules.dep"} {
		if st, err := os.Stat(filepath.Join(ks.ModulesDir, n)); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", n, st.Size(), st.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// busyboxApplets runs the packaged busybox (static, so it runs on the
// host; another architecture's through qemu-user when installed) to list its
// applets with their install paths.
func busyboxApplets(t *tree, spec *archSpec, cache string) (string, error) {
	final, _, err := t.resolve("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("busybox: %w", err)
	}
	tmp, err := os.MkdirTemp(cache, "busybox-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "busybox")
	if err := os.WriteFile(bin, t.nodes[final].data, 0o755); err != nil {
		return "", err
	}
	cmd, ok := spec.runCommand(bin, "--list-full")
	if !ok {
		return "", fmt.Errorf("cannot run the %s busybox on this host (no %s-static in PATH)", spec.name, spec.qemuUser)
	}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("listing busybox applets: %w", err)
	}
	return string(out), nil
}

func linkOrCopy(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

type countingWriter struct {
	w  io.Writer
	n  int64
	fn func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.fn(int64(n))
	return n, err
}

// lockCache serialises builds sharing a cache dir (two test packages, two
// shells) with an flock on CACHE/.lock, saying so when it has to wait.
func lockCache(ctx context.Context, dir string, pr *progress.Progress) (*fsutil.Lock, error) {
	path := filepath.Join(dir, ".lock")
	l, err := fsutil.TryLock(path)
	if errors.Is(err, fsutil.ErrLocked) {
		pr.Line("waiting for another lab image build in %s", dir)
		l, err = fsutil.LockFile(ctx, path)
	}
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	return l, nil
}

// Arch is the image's guest architecture (images built before arm64 guests have none
// in their manifest: amd64).
func (img *Image) Arch() string {
	if img.Manifest.Arch == "" {
		return AMD64
	}
	return img.Manifest.Arch
}
