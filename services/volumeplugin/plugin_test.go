package volumeplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"shoal/services/fs"
)

// fakeVolumes keeps volumes in memory; a mount is a directory marker.
type fakeVolumes struct {
	mu       sync.Mutex
	vols     map[string]string // name -> policy
	mounts   int
	unmounts int
}

type fakeMount struct{ v *fakeVolumes }

func (m fakeMount) Unmount() error { m.v.mu.Lock(); m.v.unmounts++; m.v.mu.Unlock(); return nil }

func (f *fakeVolumes) Create(_ context.Context, name, pol string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := fs.ValidateName(name); err != nil {
		return err
	}
	if _, ok := f.vols[name]; ok {
		return fs.ErrExists
	}
	f.vols[name] = pol
	return nil
}

func (f *fakeVolumes) Stat(_ context.Context, name string) (fs.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vols[name]; !ok {
		return fs.Info{}, fs.ErrNotFound
	}
	return fs.Info{Name: name, Created: time.Unix(0, 0)}, nil
}

func (f *fakeVolumes) List(context.Context) ([]fs.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fs.Info
	for n := range f.vols {
		out = append(out, fs.Info{Name: n})
	}
	return out, nil
}

func (f *fakeVolumes) Delete(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vols[name]; !ok {
		return fs.ErrNotFound
	}
	delete(f.vols, name)
	return nil
}

func (f *fakeVolumes) Mount(_ context.Context, name, _ string) (Mount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vols[name]; !ok {
		return nil, fs.ErrNotFound
	}
	f.mounts++
	return fakeMount{f}, nil
}

func call(t *testing.T, h http.Handler, op string, body any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+op, bytes.NewReader(b)))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: HTTP %d", op, rec.Code)
	}
	var out map[string]any
	if err := json.NewDecoder(rec.Body).Decode(&out); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	return out
}

// The protocol as Docker drives it: activate, create (twice: global scope),
// two containers mounting one volume share one mount, which goes with the
// last unmount; a mounted volume cannot be removed; errors come back in Err.
func TestProtocol(t *testing.T) {
	fv := &fakeVolumes{vols: map[string]string{}}
	root := t.TempDir()
	h := New(fv, root, slog.New(slog.DiscardHandler)).Handler()
	if got := call(t, h, "Plugin.Activate", nil); got["Implements"].([]any)[0] != "VolumeDriver" {
		t.Fatalf("activate: %v", got)
	}
	if got := call(t, h, "VolumeDriver.Capabilities", nil); got["Capabilities"].(map[string]any)["Scope"] != "global" {
		t.Fatalf("capabilities: %v", got)
	}
	for range 2 {
		if got := call(t, h, "VolumeDriver.Create", request{Name: "v1", Opts: map[string]string{"policy": "compress=none"}}); got["Err"] != "" {
			t.Fatalf("create: %v", got)
		}
	}
	if fv.vols["v1"] != "compress=none" {
		t.Fatalf("policy not passed: %q", fv.vols["v1"])
	}
	for name, req := range map[string]request{
		"bad option": {Name: "v2", Opts: map[string]string{"size": "1G"}},
		"bad name":   {Name: "../etc"},
	} {
		if got := call(t, h, "VolumeDriver.Create", req); got["Err"] == "" {
			t.Errorf("%s accepted", name)
		}
	}
	a := call(t, h, "VolumeDriver.Mount", request{Name: "v1", ID: "a"})
	b := call(t, h, "VolumeDriver.Mount", request{Name: "v1", ID: "b"})
	want := filepath.Join(root, "v1")
	if a["Mountpoint"] != want || b["Mountpoint"] != want || fv.mounts != 1 {
		t.Fatalf("mounts: %v %v (%d mounts)", a, b, fv.mounts)
	}
	if st, err := os.Stat(want); err != nil || !st.IsDir() {
		t.Fatalf("mount point: %v", err)
	}
	if got := call(t, h, "VolumeDriver.Path", request{Name: "v1"}); got["Mountpoint"] != want {
		t.Fatalf("path: %v", got)
	}
	if got := call(t, h, "VolumeDriver.Remove", request{Name: "v1"}); got["Err"] == "" {
		t.Fatal("a mounted volume was removed")
	}
	call(t, h, "VolumeDriver.Unmount", request{Name: "v1", ID: "a"})
	if fv.unmounts != 0 {
		t.Fatal("unmounted while another container uses it")
	}
	call(t, h, "VolumeDriver.Unmount", request{Name: "v1", ID: "b"})
	if fv.unmounts != 1 {
		t.Fatalf("%d unmounts after the last container", fv.unmounts)
	}
	if _, err := os.Stat(want); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("mount point left: %v", err)
	}
	got := call(t, h, "VolumeDriver.Get", request{Name: "v1"})
	if v := got["Volume"].(map[string]any); v["Name"] != "v1" || got["Err"] != "" {
		t.Fatalf("get: %v", got)
	}
	if got := call(t, h, "VolumeDriver.List", nil); len(got["Volumes"].([]any)) != 1 {
		t.Fatalf("list: %v", got)
	}
	if got := call(t, h, "VolumeDriver.Get", request{Name: "nope"}); got["Err"] == "" {
		t.Fatal("get of a missing volume succeeded")
	}
	if got := call(t, h, "VolumeDriver.Remove", request{Name: "v1"}); got["Err"] != "" {
		t.Fatalf("remove: %v", got)
	}
	// Malformed JSON is an Err reply, not a dropped connection.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/VolumeDriver.Create", bytes.NewReader([]byte("{"))))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != http.StatusOK || !bytes.Contains(body, []byte("malformed")) {
		t.Fatalf("malformed request: %d %s", rec.Code, body)
	}
}
