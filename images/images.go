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

// ConsoleReady is what the image's SSH server writes on the serial console once it
// listens, so the host can dial when it says so rather than polling: the initramfs
// image runs OpenSSH's sshd with -e (its log on init's console), whose "Server
// listening on ADDR port 22." follows listen(2). "" when the image does not say: the
// Debian image's sshd logs to the journal, and dropbear's "Not backgrounding" is not
// tied to its listening sockets.
func (m *Manifest) ConsoleReady() string {
	if (m.Distro == "" || m.Distro == DistroInitramfs) && m.SSHServer == OpenSSH {
		return sshdListening
	}
	return ""
}

// sshdListening is the start of OpenSSH's line once a listening socket is open.
const sshdListening = "Server listening on "

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
// second off a TCG boot (research/images.md). The last three take initcalls that
// block the boot for nothing lab uses off the critical path (initcall_debug under
// TCG, docs/DESIGN.md "Boot time"): crypto_kdf108_init's self-test requests the
// hmac module, and the usermode modprobe waits for the initramfs to be unpacked,
// so the initcalls behind it stop instead of running beside the unpacking;
// AppArmor's netfilter hooks (the guest loads no AppArmor profile: everything is
// unconfined either way) and kprobe trace events (nothing traces the guest's kernel)
// wait as well.
const DefaultCmdline = "console=ttyS0 quiet panic=-1 cryptomgr.notests=1 mitigations=off no_timer_check tsc=reliable " +
	"apparmor=0 initcall_blacklist=crypto_kdf108_init,init_kprobe_trace"

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

// build is Build without the "images:" prefix: the Debian image has its own
// builder; the initramfs image is resolved, looked up in the cache, and only
// on a miss unpacked, assembled and written.
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
	spec, server, rc, err := initramfsRecipe(opts)
	if err != nil {
		return nil, err
	}
	pr := progress.New(opts.Progress)
	cache, err := openCache(opts)
	if err != nil {
		return nil, err
	}
	// The cache check takes no lock: a complete image dir is published by one rename
	// (replaceDir), so it is read whole or not at all, and a build running for another
	// key (a Debian image takes many minutes) does not hold up a lab up of a cached one.
	ks, err := kernelFromOptions(opts)
	if err != nil {
		return nil, err
	}
	a := &apt{progress: pr, arch: spec}
	if err := a.available(); err != nil {
		return cachedWithoutApt(err, opts, ks, cache, server, spec, rc, pr)
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
	key, err := cacheKey(rc, spec, server, res.Packages, ks)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "images", key)
	if img, ok := upToDate(pr, dir, opts.Rebuild, loadImage); ok {
		return img, nil
	}
	lock, err := lockCache(ctx, cache, pr)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	// Built by the holder of the lock while this one waited.
	if img, ok := upToDate(pr, dir, opts.Rebuild, loadImage); ok {
		return img, nil
	}
	debDir := filepath.Join(cache, "debs")
	if err := a.download(ctx, debDir, res.Packages); err != nil {
		return nil, err
	}
	start := time.Now()
	kernelDir, ks, t, err := unpackPackages(ctx, pr, spec, cache, debDir, res, ks, opts.Rebuild)
	if err != nil {
		return nil, err
	}
	c, err := initramfsContents(t, ks, rc, spec, cache, pr)
	if err != nil {
		return nil, err
	}
	m := Manifest{
		Recipe: recipeVersion, Arch: spec.name, Key: key, SSHServer: server,
		KernelVersion: ks.Version, KernelOrigin: ks.Origin,
		Cmdline: spec.cmdline, Packages: res.Packages, Modules: c.modules,
	}
	return writeImage(pr, dir, kernelDir, spec, ks, c, m, start)
}

// upToDate is the complete image in dir as load reads it, unless a rebuild was asked
// for; it says so on pr.
func upToDate(pr *progress.Progress, dir string, rebuild bool, load func(dir string) (*Image, error)) (*Image, bool) {
	if rebuild {
		return nil, false
	}
	img, err := load(dir)
	if err != nil {
		return nil, false
	}
	pr.Line("image %s is up to date", dir)
	return img, true
}

// initramfsRecipe is what an initramfs image is built from before any package is
// looked at: the architecture, the SSH server and the recipe with that
// architecture's modules. Build and Key share it so their keys agree.
func initramfsRecipe(opts Options) (*archSpec, string, *recipe, error) {
	server := opts.SSHServer
	if server == "" {
		server = DefaultSSHServer
	}
	spec, err := archOf(opts.Arch)
	if err != nil {
		return nil, "", nil, err
	}
	rc, err := newRecipe(server)
	if err != nil {
		return nil, "", nil, err
	}
	rc.modules = spec.modules
	return spec, server, rc, nil
}

// cacheDir is opts.CacheDir, or the user's cache dir when that is zero.
func cacheDir(opts Options) (string, error) {
	if opts.CacheDir != "" {
		return opts.CacheDir, nil
	}
	return xdg.Dir(xdg.Cache)
}

// openCache is cacheDir, created when missing: where a build writes.
func openCache(opts Options) (string, error) {
	cache, err := cacheDir(opts)
	if err != nil {
		return "", err
	}
	return cache, os.MkdirAll(cache, 0o755)
}

// kernelFromOptions is the kernel given by --kernel/--modules, or nil for the
// kernel package from apt.
func kernelFromOptions(opts Options) (*kernelSource, error) {
	switch {
	case opts.Kernel != "":
		return kernelFromFlags(opts.Kernel, opts.Modules)
	case opts.Modules != "":
		return nil, errors.New("--modules needs --kernel")
	}
	return nil, nil
}

// cachedWithoutApt answers a build on a host without apt (aptErr): a cache copied
// from another host still serves its newest image for server and arch, unless a
// kernel was given or a rebuild asked for; otherwise the error says what lab needs.
func cachedWithoutApt(aptErr error, opts Options, ks *kernelSource, cache, server string, spec *archSpec, rc *recipe, pr *progress.Progress) (*Image, error) {
	if ks == nil && !opts.Rebuild {
		if img, ok := newestImage(cache, server, spec.name); ok {
			pr.Line("%v: using the cached image %s built %s", aptErr, img.Dir, img.Manifest.Built.Format(time.RFC3339))
			return img, nil
		}
	}
	return nil, fmt.Errorf("%w: lab builds the guest's userland from Debian packages (%s) with apt-get download: run it on a Debian or Ubuntu host (--kernel and --modules replace only the linux-image package)", aptErr, strings.Join(rc.packages, ", "))
}

// unpackPackages unpacks the kernel and the userland in parallel (the two are
// independent and each takes seconds), under one bar: two bars on one terminal
// line would garble. The kernel is res.Kernel's package, unpacked once into the
// cache, or ks (given by flags) when that is set. It returns the kernel's dir in
// the cache, the kernel (with its modules dir) and the userland tree.
func unpackPackages(ctx context.Context, pr *progress.Progress, spec *archSpec, cache, debDir string, res *resolution, ks *kernelSource, rebuild bool) (string, *kernelSource, *tree, error) {
	pkgs, kernelPkg := res.Packages, res.Kernel
	byName := map[string]Package{}
	var total int64
	for _, p := range pkgs {
		byName[p.Name] = p
		total += p.Size
	}
	kp := byName[kernelPkg]
	if ks == nil && !rebuild {
		if _, err := os.Stat(filepath.Join(kernelPkgDir(cache, kp), ".complete")); err == nil {
			total -= kp.Size // unpacked already
		}
	}
	bar := pr.Bar(fmt.Sprintf("unpacking %d packages", len(pkgs)), total, "bytes")
	g, gctx := errgroup.WithContext(ctx)
	var kernelDir string
	if ks == nil {
		kernelDir = kernelPkgDir(cache, kp)
		if rebuild {
			os.RemoveAll(kernelDir)
		}
		g.Go(func() error {
			var err error
			ks, err = unpackKernelPackage(gctx, spec, filepath.Join(debDir, kp.debFile()), kp, kernelDir, bar.Add)
			return err
		})
	} else {
		id, _ := kernelIdentity(ks)
		kernelDir = filepath.Join(cache, "kernels", "file-"+id[:20])
		if rebuild {
			os.RemoveAll(kernelDir)
		}
		g.Go(func() error { return ensureVmlinux(gctx, spec, ks, kernelDir, rebuild) })
	}
	var t *tree
	g.Go(func() error {
		var err error
		t, err = unpackTree(gctx, debDir, pkgs, kernelPkg, bar.Add)
		return err
	})
	err := g.Wait()
	bar.Finish()
	if err != nil {
		return "", nil, nil, err
	}
	return kernelDir, ks, t, nil
}

// unpackKernelPackage unpacks the kernel package kp (deb) into kernelDir and
// extracts the bootable kernel from its image while the modules are still being
// unpacked, which saves the seconds decompressing it takes.
func unpackKernelPackage(ctx context.Context, spec *archSpec, deb string, kp Package, kernelDir string, progress func(int64)) (*kernelSource, error) {
	kfile := filepath.Join(kernelDir, spec.kernelFile)
	vmTmp := kernelDir + "." + spec.kernelFile + ".tmp"
	vmErr := make(chan error, 1)
	started := false
	ks, err := unpackKernelDeb(ctx, deb, kernelDir, progress, func(data []byte) {
		started = true
		go func() { vmErr <- spec.extractKernel(ctx, data, vmTmp) }()
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
	if err != nil {
		return ks, err
	}
	ks.Origin = fmt.Sprintf("package %s %s", kp.Name, kp.Version)
	return ks, ensureVmlinux(ctx, spec, ks, kernelDir, false)
}

// contents is what an initramfs holds, with what its manifest says about it.
type contents struct {
	files   []File            // sorted as the cpio writes them
	pkgOf   map[string]string // path: the package it came from (none for lab's own files)
	modules []string          // the modules' names in load order
}

// initramfsContents assembles the initramfs from the unpacked packages: the
// recipe's modules with their dependencies, its programs with their libraries,
// busybox's applet links and the recipe's own files (init, configuration), which
// win over a package's file of the same path.
func initramfsContents(t *tree, ks *kernelSource, rc *recipe, spec *archSpec, cache string, pr *progress.Progress) (*contents, error) {
	mods, err := modulesOf(ks.ModulesDir, rc.modules)
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
	return &contents{files: files, pkgOf: pkgOf, modules: modNames}, nil
}

// writeImage writes the image into dir.tmp (initramfs, kernel, manifest) and
// renames it to dir, so that the cache never holds a half-written image under
// its key. m comes with what the build knew before; writeImage adds what
// writing finds out (the PVH note, sizes, files, times since start).
func writeImage(pr *progress.Progress, dir, kernelDir string, spec *archSpec, ks *kernelSource, c *contents, m Manifest, start time.Time) (*Image, error) {
	tmp, removeTmp, err := workDir(dir)
	if err != nil {
		return nil, err
	}
	defer removeTmp()
	size, err := writeInitrd(pr, filepath.Join(tmp, "initrd.cpio"), c.files)
	if err != nil {
		return nil, err
	}
	pvh, err := installKernel(pr, tmp, kernelDir, spec, ks)
	if err != nil {
		return nil, err
	}
	m.KernelPVH = pvh
	m.InitrdSize = size
	m.Built = time.Now().UTC().Truncate(time.Second)
	m.BuildSeconds = time.Since(start).Seconds()
	for _, f := range c.files {
		m.Files = append(m.Files, ManifestFile{Path: f.Path, Mode: f.Mode.String(), Size: len(f.Data), Link: f.Linkname, Package: c.pkgOf[f.Path]})
	}
	if err := writeManifest(tmp, m); err != nil {
		return nil, err
	}
	if err := replaceDir(tmp, dir); err != nil {
		return nil, err
	}
	pr.Line("built %s (%s, %d files, initramfs %.1f MB, kernel %s) in %.1fs", dir, spec.name, len(c.files), float64(size)/1e6, ks.Version, m.BuildSeconds)
	return loadImage(dir)
}

// writeInitrd writes files as a newc cpio to path under a progress bar, and
// returns its size.
func writeInitrd(pr *progress.Progress, path string, files []File) (int64, error) {
	var size int64
	for _, f := range files {
		size += int64(len(f.Data))
	}
	bar := pr.Bar("packing initramfs", size, "bytes")
	out, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: out, fn: bar.Add}
	err = writeCPIO(cw, files)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	bar.Finish()
	if err != nil {
		return 0, err
	}
	return cw.n, nil
}

// installKernel puts the bootable kernel into the image dir tmp and reports
// whether an amd64 vmlinux has the PVH entry note. QEMU boots an ELF kernel only
// through that note, so without it the compressed kernel (ks.Image) is used
// instead: slower, but bootable.
func installKernel(pr *progress.Progress, tmp, kernelDir string, spec *archSpec, ks *kernelSource) (bool, error) {
	if err := linkOrCopy(filepath.Join(kernelDir, spec.kernelFile), filepath.Join(tmp, spec.kernelFile)); err != nil {
		return false, err
	}
	if spec.name != AMD64 {
		return false, nil
	}
	return pvhOrCompressed(pr, filepath.Join(tmp, "vmlinux"), ks.Image, ks.Image, linkOrCopy)
}

// pvhOrCompressed reports whether vmlinux has the PVH entry note, through which alone
// QEMU boots an ELF kernel; without it, place puts the compressed kernel in its stead
// (slower, but bootable), with a warning that names the kernel as what.
func pvhOrCompressed(pr *progress.Progress, vmlinux, compressed, what string, place func(src, dst string) error) (bool, error) {
	pvh, err := hasPVHNote(vmlinux)
	if err != nil {
		return false, fmt.Errorf("vmlinux: %w", err)
	}
	if !pvh {
		pr.Line("warning: %s has no PVH entry note: booting the compressed kernel (slower)", what)
		os.Remove(vmlinux)
		if err := place(compressed, vmlinux); err != nil {
			return false, err
		}
	}
	return pvh, nil
}

// writeManifest writes m as dir/manifest.json, the file whose presence makes an
// image dir complete (loadImage, loadDebian).
func writeManifest(dir string, m Manifest) error {
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), append(mj, '\n'), 0o644)
}

// ReadManifest reads the manifest of the image in dir (lab bench reports a Debian
// image's build time from it).
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// workDir makes dir.tmp afresh, where a build writes the image that replaceDir then
// publishes as dir; remove deletes what is left of it.
func workDir(dir string) (tmp string, remove func(), err error) {
	tmp = dir + ".tmp"
	os.RemoveAll(tmp) // a build that was killed
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// replaceDir publishes a finished image: tmp takes dir's place (a --rebuild
// replaces the old image under the same key).
func replaceDir(tmp, dir string) error {
	os.RemoveAll(dir)
	return os.Rename(tmp, dir)
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
	spec, server, rc, err := initramfsRecipe(opts)
	if err != nil {
		return "", err
	}
	cache, err := cacheDir(opts)
	if err != nil {
		return "", err
	}
	ks, err := kernelFromOptions(opts)
	if err != nil {
		return "", err
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
	return newest(cache, "*", loadImage, func(img *Image) bool {
		return img.Manifest.SSHServer == server && img.Arch() == arch
	})
}

// newest is the most recently built complete image among the cache's image dirs
// matching pattern that load reads and keep accepts: what a build that cannot resolve
// packages (no apt, no network) falls back to.
func newest(cache, pattern string, load func(dir string) (*Image, error), keep func(*Image) bool) (*Image, bool) {
	dirs, _ := filepath.Glob(filepath.Join(cache, "images", pattern))
	var best *Image
	for _, d := range dirs {
		if strings.HasSuffix(d, ".tmp") {
			continue // a build's work dir, read without the build lock
		}
		img, err := load(d)
		if err != nil || !keep(img) {
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
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	kfile := "vmlinux"
	if s, ok := archSpecs[m.Arch]; ok {
		kfile = s.kernelFile
	}
	img := &Image{
		Dir: dir, Kernel: filepath.Join(dir, kfile), KernelVersion: m.KernelVersion,
		Initrd: filepath.Join(dir, "initrd.cpio"), Cmdline: m.Cmdline, Manifest: m,
	}
	if err := allExist(img.Kernel, img.Initrd); err != nil {
		return nil, err
	}
	return img, nil
}

// allExist is nil when every path exists: an image dir is complete when its manifest
// and the files it names are there.
func allExist(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return nil
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
	return lockFile(ctx, filepath.Join(dir, ".lock"), pr)
}

// lockFile takes the lock file path, saying so when another build holds it. Its
// error has no "images: " prefix: the exported callers (Build, Remove) add it.
func lockFile(ctx context.Context, path string, pr *progress.Progress) (*fsutil.Lock, error) {
	l, err := fsutil.TryLock(path)
	if errors.Is(err, fsutil.ErrLocked) {
		pr.Line("waiting for another lab image build in %s", filepath.Dir(path))
		l, err = fsutil.LockFile(ctx, path)
	}
	return l, err
}

// Arch is the image's guest architecture (images built before arm64 guests have none
// in their manifest: amd64).
func (img *Image) Arch() string {
	if img.Manifest.Arch == "" {
		return AMD64
	}
	return img.Manifest.Arch
}
