package app

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"shoal/services/s3"
	"shoal/services/s3/cluster"
	"shoal/shared/dht"
	"shoal/shared/identity"
	"shoal/shared/rpc"
)

// s3Service is the S3 frontend running in this process.
type s3Service struct {
	srv  *s3.Server
	addr net.Addr
	// keyID and secret are the all-in-one's initial access key.
	keyID, secret string
}

// S3KeyFile returns the signing key file of the S3 metadata: -s3.key-file,
// or <data>/s3/signing.key.
func S3KeyFile(cfg *Config) string {
	if cfg.S3.KeyFile != "" {
		return cfg.S3.KeyFile
	}
	return filepath.Join(cfg.DataDir, "s3", "signing.key")
}

// LoadS3Key reads the S3 signing key. An explicit -s3.key-file must exist
// (replicas must share one key, so inventing one would split the
// namespace); the default file under -data is created on first use.
func LoadS3Key(cfg *Config) (ed25519.PrivateKey, error) {
	if cfg.S3.KeyFile != "" {
		k, err := identity.LoadFile(cfg.S3.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("s3 key file: %w", err)
		}
		return k, nil
	}
	u, _, err := identity.Store{Dir: filepath.Dir(S3KeyFile(cfg))}.LoadOrCreate("signing")
	if err != nil {
		return nil, fmt.Errorf("s3 key file: %w", err)
	}
	return u.Key, nil
}

// dhtConfig is the DHT client configuration, aimed at the in-process
// placement service when there is one.
func (p *Process) dhtConfig() dht.Config {
	dc := p.cfg.DHT
	if p.Place != nil {
		dc.Placement = []string{p.Place.Addr()}
	}
	return dc
}

func (p *Process) startS3(ctx context.Context) error {
	key, err := LoadS3Key(p.cfg)
	if err != nil {
		return err
	}
	log := p.log.With("svc", "s3")
	cl, err := dht.New(p.dhtConfig(), log)
	if err != nil {
		return err
	}
	p.stoppers = append(p.stoppers, cl.Close)
	conn, err := rpc.Dial(p.s3DedupAddr())
	if err != nil {
		return err
	}
	p.stoppers = append(p.stoppers, conn.Close)
	data := cluster.NewData(conn)
	if p.cfg.S3.DirectReads {
		if err := data.ReadDirect(cl, log); err != nil {
			return err
		}
	}
	srv, err := s3.New(p.cfg.S3, data, cluster.NewMeta(cl, key), log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", p.cfg.S3.Addr)
	if err != nil {
		return err
	}
	svc := &s3Service{srv: srv, addr: ln.Addr()}
	if len(p.Nodes) > 0 {
		// The all-in-one: hand its user a working access key at once.
		if err := p.s3InitialKey(ctx, cl, svc); err != nil {
			ln.Close()
			return err
		}
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	p.stoppers = append(p.stoppers, func() error {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	p.s3 = svc
	return nil
}

// s3InitialKey loads the access key kept in <data>/s3/credentials, or
// creates one (user "admin") when the file is missing or the key was
// deleted from the cluster.
func (p *Process) s3InitialKey(ctx context.Context, cl *dht.Client, svc *s3Service) error {
	// Metadata blocks take their acceptors from the view at creation, so
	// wait for every local node before writing the first ones.
	want := min(max(cl.Config().Replicas, 1), len(p.Nodes))
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.WaitForNodes(wctx, want); err != nil {
		return fmt.Errorf("waiting for %d storage nodes: %w", want, err)
	}
	path := filepath.Join(p.cfg.DataDir, "s3", "credentials")
	id, secret, err := ReadS3Credentials(path)
	if err == nil {
		keys, err := svc.srv.ListKeys(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.ID == id {
				svc.keyID, svc.secret = id, secret
				return nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	id, secret, err = svc.srv.CreateKey(ctx, "admin")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	body := fmt.Sprintf("AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", id, secret)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return err
	}
	svc.keyID, svc.secret = id, secret
	return nil
}

// ReadS3Credentials parses a file of AWS_ACCESS_KEY_ID=... and
// AWS_SECRET_ACCESS_KEY=... lines.
func ReadS3Credentials(path string) (id, secret string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	id, secret, err = ParseS3Credentials(f)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	return id, secret, nil
}

// ParseS3Credentials reads AWS_ACCESS_KEY_ID=... and
// AWS_SECRET_ACCESS_KEY=... lines, as `shoal s3 key create` prints them.
func ParseS3Credentials(r io.Reader) (id, secret string, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		switch k {
		case "AWS_ACCESS_KEY_ID":
			id = v
		case "AWS_SECRET_ACCESS_KEY":
			secret = v
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if id == "" || secret == "" {
		return "", "", errors.New("no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
	}
	return id, secret, nil
}

// s3DedupAddr is where the S3 frontend finds the dedup tier: the one in
// this process, else -s3.dedup.
func (p *Process) s3DedupAddr() string {
	if p.Dedup != nil {
		return p.Dedup.Addr()
	}
	return p.cfg.S3.Dedup
}

// s3Endpoints are the S3 lines of the start-up banner.
func (p *Process) s3Endpoints() []string {
	if p.s3 == nil {
		return nil
	}
	host, port, _ := net.SplitHostPort(p.s3.addr.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	out := []string{"s3          http://" + net.JoinHostPort(host, port)}
	if p.s3.keyID != "" {
		out = append(out, "s3-key      AWS_ACCESS_KEY_ID="+p.s3.keyID+" AWS_SECRET_ACCESS_KEY="+p.s3.secret)
	}
	return out
}
