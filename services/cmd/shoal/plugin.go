package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/nats-io/nats.go"

	"shoal/services/dedup/client"
	"shoal/services/fs"
	"shoal/services/volumeplugin"
	"shoal/shared/dht"
	"shoal/shared/edge"
	"shoal/shared/identity"
)

// cmdVolumePlugin runs the Docker volume plugin (services/volumeplugin):
// in the managed plugin (stacks/plugin) or beside dockerd. Flags default
// to the environment the managed plugin's config sets.
func cmdVolumePlugin(ctx context.Context, args []string, _, stderr io.Writer) error {
	f := newFlags("volume-plugin", stderr)
	socket := f.String("socket", envOr("SHOAL_PLUGIN_SOCKET", "/run/docker/plugins/shoal.sock"), "unix socket Docker connects to")
	root := f.String("mount-root", envOr("SHOAL_MOUNT_ROOT", "/mnt/volumes"), "directory holding the volumes' mount points (the managed plugin's propagated mount)")
	place := f.String("placement", envOr("SHOAL_PLACEMENT", "127.0.0.1:7100"), "placement service address(es), comma-separated")
	dedupAddr := f.String("dedup", envOr("SHOAL_DEDUP", "127.0.0.1:7300"), "dedup service address")
	keyFile := f.String("key-file", envOr("SHOAL_FS_KEY_FILE", "/var/lib/shoal/fs-signing.key"), "the file-system signing key (as <data>/fs/signing.key)")
	spool := f.String("spool-dir", envOr("SHOAL_SPOOL_DIR", os.TempDir()), "where files being written are spooled")
	natsURL := f.String("nats", envOr("SHOAL_NATS", "nats://127.0.0.1:4222"), "NATS carrying invalidations between the mounts of a volume (empty: none)")
	if err := parse(f, args); err != nil {
		return err
	}
	if f.NArg() != 0 {
		return usagef("usage: shoal volume-plugin [flags]")
	}
	key, err := identity.LoadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("fs signing key: %w (see -key-file)", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cl, err := dht.New(dht.Config{Placement: splitList(*place), CallTimeout: 10 * time.Second}, log)
	if err != nil {
		return err
	}
	defer cl.Close()
	dc, err := client.Dial(*dedupAddr)
	if err != nil {
		return err
	}
	defer dc.Close()
	cfg := fs.Config{SpoolDir: *spool, Log: log}
	if *natsURL != "" {
		nc, err := nats.Connect(*natsURL, append(edge.NATSOptions(), nats.Name("shoal volume plugin"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))...)
		if err != nil {
			// Mounts still work: other nodes' changes show at open and
			// within the attribute timeout.
			log.Warn("no invalidations between mounts", "nats", *natsURL, "err", err)
		} else {
			defer nc.Close()
			cfg.NATS = nc
		}
	}
	vols := &pluginVolumes{cl: cl, reg: fs.NewRegistry(cl, key), data: dc, cfg: cfg}
	log.Info("volume plugin serving", "socket", *socket, "mount_root", *root)
	return volumeplugin.New(vols, *root, log).Serve(ctx, *socket)
}

// pluginVolumes adapts the file-system frontend to the driver.
type pluginVolumes struct {
	cl    *dht.Client
	reg   *fs.Registry
	data  *client.Client
	cfg   fs.Config
	ready atomic.Bool
}

// wait holds the first calls until the cluster's view has a write quorum
// of storage nodes: Docker calls the plugin as soon as its socket is up,
// before the placement watch has delivered a view.
func (v *pluginVolumes) wait(ctx context.Context) error {
	if v.ready.Load() {
		return nil
	}
	if err := v.cl.WaitForNodes(ctx, v.cl.Config().WriteQuorum); err != nil {
		return err
	}
	v.ready.Store(true)
	return nil
}

func (v *pluginVolumes) Create(ctx context.Context, name, policy string) error {
	if err := v.wait(ctx); err != nil {
		return err
	}
	return v.reg.Create(ctx, name, policy)
}

func (v *pluginVolumes) Stat(ctx context.Context, name string) (fs.Info, error) {
	if err := v.wait(ctx); err != nil {
		return fs.Info{}, err
	}
	return v.reg.Stat(ctx, name)
}

func (v *pluginVolumes) List(ctx context.Context) ([]fs.Info, error) {
	if err := v.wait(ctx); err != nil {
		return nil, err
	}
	return v.reg.List(ctx)
}

func (v *pluginVolumes) Delete(ctx context.Context, name string) error {
	if err := v.wait(ctx); err != nil {
		return err
	}
	return v.reg.Delete(ctx, name, v.data)
}

// Mount mounts without fusermount (the managed plugin's root file system
// has none; it holds CAP_SYS_ADMIN instead) and lets the containers' users
// in, whatever their uid.
func (v *pluginVolumes) Mount(ctx context.Context, name, dir string) (volumeplugin.Mount, error) {
	if err := v.wait(ctx); err != nil {
		return nil, err
	}
	f, err := v.reg.Open(ctx, name, v.data, v.cfg)
	if err != nil {
		return nil, err
	}
	return f.MountWith(dir, func(o *fusefs.Options) {
		o.DirectMount = true
		o.AllowOther = true
	})
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
