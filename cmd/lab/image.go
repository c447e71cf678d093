package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"lab/images"
)

func newImageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build, inspect and prune the guest image",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newImageBuildCommand(), newImageKeyCommand(), newImagePruneCommand())
	return cmd
}

func newImageKeyCommand() *cobra.Command {
	var opts images.Options
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Print the cache key of the guest image (for CI caches)",
		Long: `key prints the key under which lab image build caches the image it would build
now: a hash of the recipe, the packages' versions and checksums from this host's
apt metadata, and the kernel. Nothing is downloaded or built. CI jobs cache
$XDG_CACHE_HOME/lab under it, so a cache is reused exactly while the image it
holds is the one lab would build.`,
		Example: `  lab image key
  key=lab-image-$(lab image key)   # GitHub Actions: actions/cache with this key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.SSHServer != images.Dropbear && opts.SSHServer != images.OpenSSH {
				return &usageError{fmt.Errorf("--ssh-server: want %q or %q", images.Dropbear, images.OpenSSH)}
			}
			key, err := images.Key(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), key)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Kernel, "kernel", "", "as lab image build --kernel")
	f.StringVar(&opts.Modules, "modules", "", "as lab image build --modules")
	f.StringVar(&opts.CacheDir, "cache-dir", "", "cache directory (default $XDG_CACHE_HOME/lab or ~/.cache/lab)")
	f.StringVar(&opts.SSHServer, "ssh-server", images.DefaultSSHServer, "SSH server in the image: dropbear or openssh")
	f.StringVar(&opts.Arch, "arch", images.DefaultArch(), "guest architecture: amd64 or arm64 (as lab image build --arch)")
	f.StringVar(&opts.Distro, "distro", images.DistroInitramfs, distroUsage)
	return cmd
}

func newImageBuildCommand() *cobra.Command {
	var opts images.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the default guest image (cached)",
		Long: `Build the guest image: one initramfs holding busybox (init as PID 1), an SSH
server with OpenSSH's sftp-server, socat, and the kernel modules for
virtio-net, vsock, binfmt_misc and 9p; plus the uncompressed kernel (vmlinux)
that QEMU boots directly.

Everything comes from this host's own apt sources: 'apt-get download' fetches
the packages into the cache (no root needed, nothing is installed on the host)
and lab unpacks them itself. The kernel is the linux-image package apt would
install, unless --kernel/--modules name another one; when apt has no kernel
package the host's own /boot/vmlinuz-VERSION and /lib/modules/VERSION are used
if both exist. Without apt-get, an image already in the cache (for example
a cache copied from another host) is used.

The image is cached under the XDG cache dir ($XDG_CACHE_HOME/lab or
~/.cache/lab), keyed by the package versions, the kernel and the recipe, so a
second build is instant; --rebuild builds it again (downloaded packages are
kept). manifest.json in the image dir lists what is inside.

Two images (--distro):
  initramfs  the default: busybox init, OpenSSH, the modules interop needs, in
             RAM (boots in about 4 s under TCG; nothing persists across lab down).
  debian     Debian 12 with systemd, bash, apt, OpenSSH, sudo, a user "lab" and
             the kernel, on an ext4 disk (qcow2): what WSL users live in. Built
             with mmdebstrap from this host's apt sources (a few minutes, needs
             the network to them; cached like the initramfs). Each machine boots
             on its own copy-on-write disk over it, kept across lab down.`,
		Example: `  lab image build                    # build or reuse the cached image
  lab image build --rebuild --json   # build again, print the manifest
  lab image build --arch arm64       # an arm64 guest (on an amd64 host it runs under TCG)
  lab image build --distro debian    # the Debian 12 + systemd image
  lab image build --kernel /boot/vmlinuz-6.1.0-56-amd64 --modules /lib/modules/6.1.0-56-amd64`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.SSHServer != images.Dropbear && opts.SSHServer != images.OpenSSH {
				return &usageError{fmt.Errorf("--ssh-server: want %q or %q", images.Dropbear, images.OpenSSH)}
			}
			if err := checkDistro(opts.Distro); err != nil {
				return err
			}
			var progress io.Writer = cmd.ErrOrStderr()
			if asJSON {
				progress = nil
				if f, ok := cmd.ErrOrStderr().(*os.File); ok {
					progress = f // bars on a terminal, lines otherwise; stdout stays JSON
				}
			}
			opts.Progress = progress
			img, err := images.Build(cmd.Context(), opts)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Dir           string          `json:"dir"`
					Kernel        string          `json:"kernel"`
					KernelVersion string          `json:"kernel_version"`
					Initrd        string          `json:"initrd"`
					Cmdline       string          `json:"cmdline"`
					Manifest      images.Manifest `json:"manifest"`
				}{img.Dir, img.Kernel, img.KernelVersion, img.Initrd, img.Cmdline, img.Manifest})
			}
			if img.Disk != "" {
				fmt.Fprintf(out, "image:   %s (%s)\nkernel:  %s (%s)\ninitrd:  %s\ndisk:    %s (%.0f MB, %d packages)\ncmdline: %s\n",
					img.Dir, img.Distro, img.Kernel, img.KernelVersion, img.Initrd, img.Disk,
					float64(img.Manifest.DiskSize)/1e6, len(img.Manifest.Packages), img.Cmdline)
				return nil
			}
			fmt.Fprintf(out, "image:   %s\narch:    %s\nkernel:  %s (%s)\ninitrd:  %s (%.1f MB, %d files, %s)\ncmdline: %s\n",
				img.Dir, img.Arch(), img.Kernel, img.KernelVersion, img.Initrd,
				float64(img.Manifest.InitrdSize)/1e6, len(img.Manifest.Files), img.Manifest.SSHServer, img.Cmdline)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.Rebuild, "rebuild", false, "build again even if the cache has the image (downloaded packages are kept)")
	f.StringVar(&opts.Kernel, "kernel", "", "use this kernel (bzImage/vmlinuz or vmlinux) instead of the linux-image package")
	f.StringVar(&opts.Modules, "modules", "", "the /lib/modules/VERSION directory matching --kernel")
	f.StringVar(&opts.CacheDir, "cache-dir", "", "cache directory (default $XDG_CACHE_HOME/lab or ~/.cache/lab)")
	f.StringVar(&opts.SSHServer, "ssh-server", images.DefaultSSHServer, "SSH server in the image: dropbear or openssh")
	f.StringVar(&opts.Arch, "arch", images.DefaultArch(), "guest architecture: amd64 or arm64 (another than the host's runs under TCG; its packages come from this host's apt sources)")
	f.BoolVar(&asJSON, "json", false, "print the image's paths and manifest as JSON on stdout")
	f.StringVar(&opts.Distro, "distro", images.DistroInitramfs, distroUsage)
	return cmd
}

const distroUsage = "guest image: initramfs (fast, in RAM) or debian (Debian 12 with systemd on a persistent disk)"

// checkDistro refuses an unknown --distro as a usage error.
func checkDistro(d string) error {
	if d == "" {
		return nil // the default
	}
	for _, x := range images.Distros {
		if d == x {
			return nil
		}
	}
	return &usageError{fmt.Errorf("--distro %q: want %s", d, strings.Join(images.Distros, " or "))}
}
