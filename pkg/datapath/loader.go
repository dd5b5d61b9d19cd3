package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// linksDir is the sub-directory of PinDir holding pinned links.
const linksDir = "links"

func open(cfg Config) (*Datapath, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open datapath: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.PinDir, linksDir), 0o700); err != nil {
		return nil, fmt.Errorf("open datapath: create pin dir: %w", err)
	}
	if err := checkBPFFS(cfg.PinDir); err != nil {
		return nil, fmt.Errorf("open datapath: %w", err)
	}
	// Kernels >= 5.11 account BPF memory to the cgroup; older ones need this.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("open datapath: remove memlock rlimit: %w", err)
	}

	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinDir}}
	d := &Datapath{cfg: cfg, pmtuFD: -1}
	lxc, err := sizedSpec(loadLxc, cfg.MapSizes)
	if err != nil {
		return nil, fmt.Errorf("open datapath: lxc objects: %w", err)
	}
	uplink, err := sizedSpec(loadUplink, cfg.MapSizes)
	if err != nil {
		return nil, fmt.Errorf("open datapath: uplink objects: %w", err)
	}
	d.specs = []*ebpf.CollectionSpec{lxc, uplink}
	err = d.load(lxc, uplink, opts)
	var up *upgrade
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Pinned by another data plane version (or other map sizes):
		// replace those maps as their roles say and load again.
		if up, err = migrate(cfg.PinDir, lxc, uplink); err != nil {
			return nil, fmt.Errorf("open datapath: %w", err)
		}
		err = d.load(lxc, uplink, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open datapath: %w", err)
	}
	d.up = pendingUpgrade(cfg.PinDir, up)
	if err := d.writeConfig(); err != nil {
		d.close()
		return nil, fmt.Errorf("open datapath: %w", err)
	}
	return d, nil
}

// sizedSpec returns an object's collection spec with the map capacities of
// sizes.
func sizedSpec(load func() (*ebpf.CollectionSpec, error), sizes MapSizes) (*ebpf.CollectionSpec, error) {
	spec, err := load()
	if err != nil {
		return nil, err
	}
	if err := sizes.apply(spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// load loads both objects. They declare the same maps pinned by name: the
// first load creates (or re-adopts) the pins, the second re-adopts them,
// so both programs share one set of maps.
func (d *Datapath) load(lxc, uplink *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	if err := lxc.LoadAndAssign(&d.lxc, opts); err != nil {
		return fmt.Errorf("load lxc objects: %w", loadErr(err))
	}
	if err := uplink.LoadAndAssign(&d.uplink, opts); err != nil {
		d.lxc.Close()
		d.lxc = lxcObjects{}
		return fmt.Errorf("load uplink objects: %w", loadErr(err))
	}
	return nil
}

// loadErr adds the verifier log to a load error and explains a pinned map
// Open could not migrate.
func loadErr(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w: %+v", err, ve)
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("%w (pinned by another data plane version or with other map sizes: Open migrates such maps, see MapMigration)", err)
	}
	return err
}

func (c Config) validate() error {
	switch {
	case c.PinDir == "":
		return errors.New("config: pin dir is empty")
	case !c.UnderlayIP.Is4():
		return fmt.Errorf("config: underlay ip %q is not ipv4", c.UnderlayIP)
	case c.UplinkIfindex <= 0:
		return fmt.Errorf("config: uplink ifindex %d is invalid", c.UplinkIfindex)
	case len(c.UplinkMAC) != 6:
		return fmt.Errorf("config: uplink mac %q is not a 6-byte mac", c.UplinkMAC)
	case len(c.GatewayMAC) != 6:
		return fmt.Errorf("config: gateway mac %q is not a 6-byte mac", c.GatewayMAC)
	}
	return errors.Join(c.MapSizes.validate(), c.EndpointAttach.validate())
}

// checkBPFFS refuses pin directories outside bpffs: pins elsewhere fail late
// and Remove must never delete a non-bpffs tree.
func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs pin dir %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("pin dir %s is not on bpffs", dir)
	}
	return nil
}

func (d *Datapath) writeConfig() error {
	var nc lxcNodeConfig
	nc.UnderlayIp = ip4(d.cfg.UnderlayIP)
	nc.UplinkIfindex = uint32(d.cfg.UplinkIfindex)
	copy(nc.UplinkMac[:], d.cfg.UplinkMAC)
	copy(nc.GwMac[:], d.cfg.GatewayMAC)
	if err := d.lxc.GenieConfig.Update(uint32(0), &nc, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write node config: %w", err)
	}
	return nil
}

func (d *Datapath) close() error {
	var err error
	if d.pmtuFD >= 0 {
		err = unix.Close(d.pmtuFD)
		d.pmtuFD = -1
	}
	d.up = nil
	return errors.Join(err, d.lxc.Close(), d.uplink.Close())
}

func remove(pinDir string) error {
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := checkBPFFS(pinDir); err != nil {
		return fmt.Errorf("remove datapath: %w", err)
	}
	// A link whose last reference (pin) goes away is detached; maps are
	// freed once no program uses them. Detach explicitly anyway so a link
	// fd held elsewhere cannot keep a program attached.
	entries, _ := os.ReadDir(filepath.Join(pinDir, linksDir))
	var errs []error
	for _, e := range entries {
		if err := detachPinned(filepath.Join(pinDir, linksDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, fmt.Errorf("remove pin dir: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove datapath %s: %w", pinDir, err)
	}
	return nil
}
