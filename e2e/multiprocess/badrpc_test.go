package multiprocess

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	bpb "shoal/proto/blockstorepb"
	dpb "shoal/proto/dedupb"
	ppb "shoal/proto/placementpb"

	"shoal/e2e/framework"
	"shoal/shared/randtest"
)

// Every gRPC method of every service answers malformed and random
// requests with a status, never with a crash, a dropped connection or a
// hang, and never with Internal or Unknown (the mistake is the client's):
// a storage node, a dedup process or a placement service must not be taken
// down by one bad client. The requests are random messages of each
// method's request type (fields set or not, bytes of random lengths, out of
// range enums and numbers, oneofs, nested messages); the seed is logged
// and SHOAL_RPC_FUZZ_SEED replays it, SHOAL_RPC_FUZZ_N sets the requests
// per method.
func TestRPCBadInput(t *testing.T) {
	seed := randtest.Seed(t, "SHOAL_RPC_FUZZ_SEED")
	perMethod := randtest.Count(t, "SHOAL_RPC_FUZZ_N", 40)
	data := t.TempDir()
	p := framework.StartProc(t, "all-in-one", "serve", "-data="+data, "-nodes=3", "-nats.listen=127.0.0.1:0",
		"-placement.listen=127.0.0.1:0", "-blockstore.listen=127.0.0.1:0", "-dedup.listen=127.0.0.1:0",
		"-s3.addr=127.0.0.1:0", "-nbd.addr=127.0.0.1:0")
	targets := []struct {
		service protoreflect.FullName
		addr    string
	}{
		{ppb.File_placementpb_placement_proto.Services().Get(0).FullName(), p.Field("placement", time.Minute)},
		{bpb.File_blockstorepb_blockstore_proto.Services().Get(0).FullName(), p.Field("blockstore", time.Minute)},
		{dpb.File_dedupb_dedup_proto.Services().Get(0).FullName(), p.Field("dedup", time.Minute)},
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	codesSeen := map[string]int{}
	for _, tg := range targets {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(tg.service)
		if err != nil {
			t.Fatal(err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		conn, err := grpc.NewClient(tg.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			name := fmt.Sprintf("/%s/%s", sd.FullName(), md.Name())
			for n := 0; n < perMethod; n++ {
				// The first request of each method is the empty one.
				depth := 4
				if n == 0 {
					depth = -1
				}
				code, err := callRandom(conn, md, name, rng, depth)
				codesSeen[fmt.Sprintf("%s %s", md.Name(), code)]++
				select {
				case <-p.Exited():
					t.Fatalf("%s: the process exited after request %d (seed %d)", name, n, seed)
				default:
				}
				if err != nil {
					t.Fatalf("%s request %d (seed %d): %v", name, n, seed, err)
				}
			}
		}
	}
	keys := make([]string, 0, len(codesSeen))
	for k := range codesSeen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%-32s %d", k, codesSeen[k])
	}

	// Still serving: the cluster takes and returns a stream.
	out, _, code := framework.Run(t, nil, "status", "--placement", targets[0].addr)
	if code != 0 {
		t.Fatalf("shoal status after the bad requests: exit %d\n%s", code, out)
	}
}

// callRandom sends one random request to a method (for client streams, a
// few) and returns the status code of the answer. A dropped connection or
// a server that does not answer within the deadline is an error; a
// server-streaming method may stay open (placement's Watch does, by
// design), so its deadline is not.
func callRandom(conn *grpc.ClientConn, md protoreflect.MethodDescriptor, name string, rng *rand.Rand, depth int) (codes.Code, error) {
	// A server stream may stay open (placement's Watch waits for the
	// next view): it gets a short deadline, which is no failure.
	serverStreamOnly := md.IsStreamingServer() && !md.IsStreamingClient()
	timeout := 10 * time.Second
	if serverStreamOnly {
		timeout = 300 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	newReq := func() (proto.Message, error) {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
		if err != nil {
			return nil, err
		}
		m := mt.New()
		if depth >= 0 {
			fillRandom(m, rng, depth)
		}
		return m.Interface(), nil
	}
	newResp := func() (proto.Message, error) {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
		if err != nil {
			return nil, err
		}
		return mt.New().Interface(), nil
	}
	resp, err := newResp()
	if err != nil {
		return 0, err
	}
	var callErr error
	switch {
	case !md.IsStreamingClient() && !md.IsStreamingServer():
		req, err := newReq()
		if err != nil {
			return 0, err
		}
		callErr = conn.Invoke(ctx, name, req, resp)
	default:
		desc := &grpc.StreamDesc{StreamName: string(md.Name()), ClientStreams: md.IsStreamingClient(), ServerStreams: md.IsStreamingServer()}
		st, err := conn.NewStream(ctx, desc, name)
		if err != nil {
			return 0, err
		}
		sends := 1
		if md.IsStreamingClient() {
			sends = rng.IntN(4)
		}
		for range sends {
			req, err := newReq()
			if err != nil {
				return 0, err
			}
			if err := st.SendMsg(req); err != nil {
				break // the server answered already; RecvMsg has it
			}
		}
		if err := st.CloseSend(); err != nil {
			return 0, err
		}
		for {
			if callErr = st.RecvMsg(resp); callErr != nil {
				break
			}
		}
		if errors.Is(callErr, io.EOF) {
			callErr = nil
		}
		if status.Code(callErr) == codes.DeadlineExceeded && serverStreamOnly {
			return codes.DeadlineExceeded, nil
		}
	}
	c := status.Code(callErr)
	switch c {
	case codes.Unavailable:
		return c, fmt.Errorf("connection dropped: %v", callErr)
	case codes.Internal, codes.Unknown:
		// Every request here is the client's doing.
		return c, fmt.Errorf("a client's mistake answered as a server fault: %v", callErr)
	case codes.DeadlineExceeded:
		return c, fmt.Errorf("no answer within the deadline: %v", callErr)
	}
	return c, nil
}

// fillRandom sets a random subset of m's fields to random values, nested
// messages down to depth.
func fillRandom(m protoreflect.Message, rng *rand.Rand, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			// One field of a oneof, chosen at random when its first
			// field comes up.
			if od.Fields().Get(0) != fd || rng.IntN(4) == 0 {
				continue
			}
			fd = od.Fields().Get(rng.IntN(od.Fields().Len()))
		} else if rng.IntN(3) == 0 {
			continue
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range rng.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth > 0 {
						e := l.NewElement()
						fillRandom(e.Message(), rng, depth-1)
						l.Append(e)
					}
					continue
				}
				l.Append(randomScalar(fd, rng))
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range rng.IntN(3) {
				k := randomScalar(fd.MapKey(), rng).MapKey()
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					if depth > 0 {
						v := mp.NewValue()
						fillRandom(v.Message(), rng, depth-1)
						mp.Set(k, v)
					}
					continue
				}
				mp.Set(k, randomScalar(fd.MapValue(), rng))
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if depth > 0 {
				fillRandom(m.Mutable(fd).Message(), rng, depth-1)
			}
		default:
			m.Set(fd, randomScalar(fd, rng))
		}
	}
}

// randomScalar is a random value of a scalar field, edge values often.
func randomScalar(fd protoreflect.FieldDescriptor, rng *rand.Rand) protoreflect.Value {
	ints := []int64{0, 1, -1, 2, 3, 4, 16, 255, 256, 4096, 1 << 20, 1 << 31, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64}
	anInt := func() int64 {
		if rng.IntN(3) == 0 {
			return rng.Int64() >> rng.IntN(63)
		}
		return ints[rng.IntN(len(ints))]
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rng.IntN(2) == 0)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if rng.IntN(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(rng.Int32N(1000) - 500))
		}
		return protoreflect.ValueOfEnum(vals.Get(rng.IntN(vals.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(anInt()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(anInt())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(anInt()))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(anInt()))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(anInt()))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(anInt()))
	case protoreflect.StringKind:
		strs := []string{"", "a", "node-0", "..", "/", "\x00", "é", "bucket", "chunk=cdc:16k/64k/256k", "r=3", "ec=4+2", "zstd:3"}
		if rng.IntN(3) == 0 {
			b := make([]byte, rng.IntN(40))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			// Valid UTF-8: the client's marshaling refuses anything else.
			return protoreflect.ValueOfString(strings.ToValidUTF8(string(b), "?"))
		}
		return protoreflect.ValueOfString(strs[rng.IntN(len(strs))])
	case protoreflect.BytesKind:
		lens := []int{0, 1, 2, 16, 31, 32, 33, 64, 65, 100, 200}
		b := make([]byte, lens[rng.IntN(len(lens))])
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		if len(b) > 0 && rng.IntN(3) == 0 {
			b[0] = byte(rng.IntN(4)) // a plausible format version byte
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic(fmt.Sprintf("randomScalar: kind %v", fd.Kind()))
}
