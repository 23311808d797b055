package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"shoal/services/dedup/client"
	"shoal/services/nbd"
	"shoal/shared/dht"
	"shoal/shared/identity"
)

// NBDKeyFile returns the file of the key signing volume heads:
// -nbd.key-file, or <data>/nbd/signing.key.
func NBDKeyFile(cfg *Config) string {
	if cfg.NBD.KeyFile != "" {
		return cfg.NBD.KeyFile
	}
	return filepath.Join(cfg.DataDir, "nbd", "signing.key")
}

// LoadNBDKey reads the volume signing key. As with S3's, an explicit file
// must exist (servers must share it); the default one is created.
func LoadNBDKey(cfg *Config) (ed25519.PrivateKey, error) {
	if cfg.NBD.KeyFile != "" {
		k, err := identity.LoadFile(cfg.NBD.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("nbd key file: %w", err)
		}
		return k, nil
	}
	u, _, err := identity.Store{Dir: filepath.Dir(NBDKeyFile(cfg))}.LoadOrCreate("signing")
	if err != nil {
		return nil, fmt.Errorf("nbd key file: %w", err)
	}
	return u.Key, nil
}

// NBDDedupAddr is where the NBD frontend finds the dedup tier: the one in
// this process, else -nbd.dedup.
func (p *Process) nbdDedupAddr() string {
	if p.Dedup != nil {
		return p.Dedup.Addr()
	}
	return p.cfg.NBD.Dedup
}

func (p *Process) startNBD(ctx context.Context) error {
	key, err := LoadNBDKey(p.cfg)
	if err != nil {
		return err
	}
	log := p.log.With("svc", "nbd")
	cl, err := dht.New(p.dhtConfig(), log)
	if err != nil {
		return err
	}
	dc, err := client.Dial(p.nbdDedupAddr())
	if err != nil {
		cl.Close()
		return err
	}
	// Extents of unencrypted volumes are read from the nodes directly.
	if err := dc.ReadDirect(cl); err != nil {
		dc.Close()
		cl.Close()
		return err
	}
	cfg := p.cfg.NBD
	if cfg.ID == "" {
		if cfg.ID, err = nbdServerID(filepath.Join(p.cfg.DataDir, "nbd", "server-id")); err != nil {
			dc.Close()
			cl.Close()
			return err
		}
	}
	svc, err := nbd.Start(cfg, nbd.NewRegistry(cl, key), dc, log)
	if err != nil {
		dc.Close()
		cl.Close()
		return err
	}
	p.NBD = svc
	p.stoppers = append(p.stoppers, func() error {
		err := svc.Stop()
		dc.Close()
		cl.Close()
		return err
	})
	return nil
}

// nbdServerID reads the server's lease name kept under the data directory,
// or makes one: restarted on the same data, it resumes its volumes without
// waiting for its own leases to expire.
func nbdServerID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	id := nbd.NewID()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return id, os.WriteFile(path, []byte(id+"\n"), 0o600)
}

// nbdEndpoints are the NBD lines of the start-up banner.
func (p *Process) nbdEndpoints() []string {
	if p.NBD == nil {
		return nil
	}
	host, port, _ := net.SplitHostPort(p.NBD.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return []string{"nbd         nbd://" + net.JoinHostPort(host, port) + "/VOLUME   (shoal nbd create VOLUME -size 1G)"}
}
