// Package volumeplugin is Shoal's Docker volume plugin: the Docker volume
// driver protocol (docker.volumedriver/1.0, JSON over HTTP on a unix
// socket) over the FUSE frontend (services/fs). `docker volume create -d
// shoal NAME` makes a Shoal file-system volume; a container using it gets
// the volume mounted with FUSE under the plugin's propagated mount, shared
// by every container on the node that uses it, and the same files on every
// node (the volumes live in the cluster, so the driver's scope is global).
//
// It runs as a managed plugin (stacks/plugin: config.json asks for
// CAP_SYS_ADMIN, /dev/fuse and a propagated mount, which swarm services
// cannot have) or as a plain process beside dockerd.
package volumeplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"shoal/services/fs"
)

// Volumes is what the driver needs of the file-system frontend.
type Volumes interface {
	Create(ctx context.Context, name, policy string) error
	Stat(ctx context.Context, name string) (fs.Info, error)
	List(ctx context.Context) ([]fs.Info, error)
	Delete(ctx context.Context, name string) error
	// Mount mounts volume name at dir until the returned mount is
	// unmounted (a *fuse.Server).
	Mount(ctx context.Context, name, dir string) (Mount, error)
}

// Mount is a mounted volume.
type Mount interface {
	Unmount() error
}

// Driver serves the volume driver protocol.
type Driver struct {
	vols Volumes
	// root holds one mount point per mounted volume (the managed
	// plugin's propagated mount).
	root string
	log  *slog.Logger

	mu     sync.Mutex
	mounts map[string]*mounted
}

type mounted struct {
	srv  Mount
	dir  string
	refs map[string]bool // Docker's mount ids
}

// New returns a driver mounting volumes under root.
func New(vols Volumes, root string, log *slog.Logger) *Driver {
	return &Driver{vols: vols, root: root, log: log, mounts: map[string]*mounted{}}
}

// Handler is the protocol's HTTP handler.
func (d *Driver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"Implements": []string{"VolumeDriver"}})
	})
	mux.HandleFunc("POST /VolumeDriver.Capabilities", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"Capabilities": map[string]string{"Scope": "global"}})
	})
	handle(mux, "Create", d.create)
	handle(mux, "Remove", d.remove)
	handle(mux, "Mount", d.mount)
	handle(mux, "Unmount", d.unmount)
	handle(mux, "Path", d.path)
	handle(mux, "Get", d.get)
	handle(mux, "List", d.list)
	return mux
}

// request is the union of the protocol's request bodies.
type request struct {
	Name string
	ID   string
	Opts map[string]string
}

type volume struct {
	Name       string
	Mountpoint string `json:",omitempty"`
	CreatedAt  string `json:",omitempty"`
}

// response is the union of the protocol's replies; Err is the error
// message Docker shows ("" on success).
type response struct {
	Err        string
	Mountpoint string    `json:",omitempty"`
	Volume     *volume   `json:",omitempty"`
	Volumes    []*volume `json:",omitempty"`
}

// callTimeout bounds one driver call: Docker waits for it holding locks
// of its own, so a cluster that does not answer must yield an error.
const callTimeout = 60 * time.Second

func handle(mux *http.ServeMux, op string, fn func(context.Context, request) (response, error)) {
	mux.HandleFunc("POST /VolumeDriver."+op, func(w http.ResponseWriter, r *http.Request) {
		var req request
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
				reply(w, response{Err: "malformed request: " + err.Error()})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
		defer cancel()
		resp, err := fn(ctx, req)
		if err != nil {
			resp = response{Err: err.Error()}
		}
		reply(w, resp)
	})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	_ = json.NewEncoder(w).Encode(v)
}

func (d *Driver) create(ctx context.Context, req request) (response, error) {
	var pol string
	for k, v := range req.Opts {
		if k != "policy" {
			return response{}, fmt.Errorf("unknown option %q (known: policy)", k)
		}
		pol = v
	}
	err := d.vols.Create(ctx, req.Name, pol)
	if errors.Is(err, fs.ErrExists) {
		// Global scope: every node's daemon may ask to create a volume
		// another node created. It is the same volume.
		err = nil
	}
	return response{}, err
}

func (d *Driver) remove(ctx context.Context, req request) (response, error) {
	d.mu.Lock()
	_, busy := d.mounts[req.Name]
	d.mu.Unlock()
	if busy {
		return response{}, fmt.Errorf("volume %s is mounted on this node", req.Name)
	}
	return response{}, d.vols.Delete(ctx, req.Name)
}

func (d *Driver) mount(ctx context.Context, req request) (response, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.mounts[req.Name]; m != nil {
		m.refs[req.ID] = true
		return response{Mountpoint: m.dir}, nil
	}
	if err := fs.ValidateName(req.Name); err != nil {
		return response{}, err
	}
	dir := filepath.Join(d.root, req.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return response{}, err
	}
	srv, err := d.vols.Mount(ctx, req.Name, dir)
	if err != nil {
		_ = os.Remove(dir)
		return response{}, err
	}
	d.mounts[req.Name] = &mounted{srv: srv, dir: dir, refs: map[string]bool{req.ID: true}}
	d.log.Info("volume mounted", "volume", req.Name, "dir", dir)
	return response{Mountpoint: dir}, nil
}

func (d *Driver) unmount(_ context.Context, req request) (response, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.mounts[req.Name]
	if m == nil {
		return response{}, nil
	}
	delete(m.refs, req.ID)
	if len(m.refs) > 0 {
		return response{}, nil
	}
	if err := m.srv.Unmount(); err != nil {
		m.refs[req.ID] = true
		return response{}, fmt.Errorf("unmounting %s: %w", req.Name, err)
	}
	delete(d.mounts, req.Name)
	_ = os.Remove(m.dir)
	d.log.Info("volume unmounted", "volume", req.Name)
	return response{}, nil
}

func (d *Driver) mountpoint(name string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.mounts[name]; m != nil {
		return m.dir
	}
	return ""
}

func (d *Driver) path(ctx context.Context, req request) (response, error) {
	if _, err := d.vols.Stat(ctx, req.Name); err != nil {
		return response{}, err
	}
	return response{Mountpoint: d.mountpoint(req.Name)}, nil
}

func (d *Driver) get(ctx context.Context, req request) (response, error) {
	in, err := d.vols.Stat(ctx, req.Name)
	if err != nil {
		return response{}, err
	}
	return response{Volume: &volume{Name: in.Name, Mountpoint: d.mountpoint(in.Name), CreatedAt: in.Created.Format(time.RFC3339)}}, nil
}

func (d *Driver) list(ctx context.Context, _ request) (response, error) {
	infos, err := d.vols.List(ctx)
	if err != nil {
		return response{}, err
	}
	out := make([]*volume, 0, len(infos))
	for _, in := range infos {
		out = append(out, &volume{Name: in.Name, Mountpoint: d.mountpoint(in.Name), CreatedAt: in.Created.Format(time.RFC3339)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return response{Volumes: out}, nil
}

// Serve serves the protocol on a unix socket at path until ctx ends, then
// unmounts whatever is still mounted.
func (d *Driver) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	_ = os.Remove(path) // a socket left by a previous run
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-done:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, m := range d.mounts {
		if uerr := m.srv.Unmount(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unmounting %s: %w", name, uerr))
		}
		delete(d.mounts, name)
	}
	return err
}
