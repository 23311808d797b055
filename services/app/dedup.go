package app

import (
	"context"
	"path/filepath"

	"shoal/services/dedup"
	"shoal/shared/block"
	"shoal/shared/dht"
)

// startDedup runs the dedup tier on its own DHT client: aimed at the
// placement service in this process when there is one, with a block limit
// that fits sealed 4 MiB chunks. Its master key comes from
// -dedup.master-key-file, or is generated once under <data>/dedup.
// dedupConfig is the dedup tier's configuration with its directory
// derived from the data directory.
func (p *Process) dedupConfig() dedup.Config {
	cfg := p.cfg.Dedup
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(p.cfg.DataDir, "dedup")
	}
	return cfg
}

func (p *Process) startDedup(ctx context.Context) error {
	dc := p.cfg.DHT
	if p.Place != nil {
		dc.Placement = []string{p.Place.Addr()}
	}
	dc.MaxBlockSize = max(dc.MaxBlockSize, block.MaxSealed)
	log := p.log.With("svc", "dedup")
	cl, err := dht.New(dc, log)
	if err != nil {
		return err
	}
	s, err := dedup.New(p.dedupConfig(), cl, log)
	if err == nil {
		err = s.Start(ctx)
	}
	if err != nil {
		cl.Close()
		return err
	}
	p.Dedup = s
	p.stoppers = append(p.stoppers, func() error {
		err := s.Stop()
		cl.Close()
		return err
	})
	return nil
}

// dedupEndpoints are the dedup lines of the start-up banner.
func (p *Process) dedupEndpoints() []string {
	if p.Dedup == nil {
		return nil
	}
	return []string{"dedup       " + p.Dedup.Addr() + "   (shoal put --dedup " + p.Dedup.Addr() + ")"}
}
