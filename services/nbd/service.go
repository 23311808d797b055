package nbd

import (
	"errors"
	"log/slog"
	"net"

	"shoal/services/nbd/wire"
)

// Service is a running NBD frontend: a listener, the protocol server and
// the volume manager behind it.
type Service struct {
	Manager *Manager
	srv     *wire.Server
	ln      net.Listener
	done    chan error
}

// Start listens on cfg.Addr and serves the registry's volumes.
func Start(cfg Config, reg *Registry, data Data, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	m := NewManager(reg, data, cfg, log)
	s := &Service{Manager: m, srv: &wire.Server{Exports: m, Log: log}, ln: ln, done: make(chan error, 1)}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the listening address.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// Stop closes every connection; the last connection of each volume
// commits its writes and gives its lease back.
func (s *Service) Stop() error {
	err := s.srv.Close()
	if serr := <-s.done; serr != nil && !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
