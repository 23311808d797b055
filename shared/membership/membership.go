// Package membership is the one place that names Shoal's NATS subjects and
// defines the messages sent on them. Storage nodes announce themselves with
// heartbeats; placement replicas turn those into an epoch-numbered view;
// view changes and heal requests are broadcast for the nodes that act on
// them. Nothing here is on the data path.
//
// Subjects:
//
//	shoal.membership.heartbeat   Heartbeat, every storage node, every interval
//	shoal.membership.leave       Leave, a storage node shutting down cleanly
//	shoal.placement.epoch        EpochNote, placement replicas' Lamport clock
//	shoal.placement.view         ViewNote, a placement replica's view changed
//	shoal.heal.evicted           Evicted, a node was evicted; holders re-replicate
package membership

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"shoal/shared/telemetry"
)

// Subjects; see the package comment.
const (
	SubjectHeartbeat = "shoal.membership.heartbeat"
	SubjectLeave     = "shoal.membership.leave"
	SubjectEpoch     = "shoal.placement.epoch"
	SubjectView      = "shoal.placement.view"
	SubjectEvicted   = "shoal.heal.evicted"
)

// Defaults for the failure detector.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultDownAfter         = 4 * time.Second
	DefaultEvictAfter        = 60 * time.Second
)

// Heartbeat is a storage node's periodic announcement.
type Heartbeat struct {
	ID       string  `json:"id"`
	Addr     string  `json:"addr"`
	Zone     string  `json:"zone"`
	Capacity uint64  `json:"capacity"`
	Used     uint64  `json:"used"`
	Blocks   uint64  `json:"blocks"`
	Weight   float64 `json:"weight,omitempty"`
	// Started distinguishes a restarted node from a node that kept running.
	Started int64 `json:"started"`
}

// Leave announces a clean departure.
type Leave struct {
	ID string `json:"id"`
}

// EpochNote carries a placement replica's epoch so replicas stay comparable.
type EpochNote struct {
	Replica string `json:"replica"`
	Epoch   uint64 `json:"epoch"`
}

// ViewNote tells subscribers that a view with this epoch exists.
type ViewNote struct {
	Epoch uint64 `json:"epoch"`
}

// Evicted names a node removed from the view.
type Evicted struct {
	ID    string `json:"id"`
	Epoch uint64 `json:"epoch"`
}

// Publish sends v as JSON on subject with ctx's trace context in headers.
func Publish(ctx context.Context, nc *nats.Conn, subject string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: subject, Data: b}
	telemetry.InjectNATS(ctx, msg)
	return nc.PublishMsg(msg)
}

// Decode parses a message published with Publish and returns the context
// carrying its trace.
func Decode(msg *nats.Msg, v any) (context.Context, error) {
	ctx := telemetry.ExtractNATS(context.Background(), msg)
	return ctx, json.Unmarshal(msg.Data, v)
}
