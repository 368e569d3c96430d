package queue

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// fakeParams keeps parameters as SSM does: PutParameter without Overwrite
// refuses an existing name.
type fakeParams struct {
	params map[string]string
	puts   int
}

func (f *fakeParams) GetParameter(_ context.Context, in *ssm.GetParameterInput, _ ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	v, ok := f.params[aws.ToString(in.Name)]
	if !ok {
		return nil, &ssmtypes.ParameterNotFound{}
	}
	return &ssm.GetParameterOutput{Parameter: &ssmtypes.Parameter{Value: aws.String(v)}}, nil
}

func (f *fakeParams) PutParameter(_ context.Context, in *ssm.PutParameterInput, _ ...func(*ssm.Options)) (*ssm.PutParameterOutput, error) {
	f.puts++
	if _, ok := f.params[aws.ToString(in.Name)]; ok && !aws.ToBool(in.Overwrite) {
		return nil, &ssmtypes.ParameterAlreadyExists{}
	}
	if in.Type != ssmtypes.ParameterTypeSecureString {
		return nil, errors.New("a report key must be a SecureString")
	}
	f.params[aws.ToString(in.Name)] = aws.ToString(in.Value)
	return &ssm.PutParameterOutput{}, nil
}

// A host's key is made once and kept: a restart reads the same key, and
// the reports function reads what the host made; other hosts are unknown.
func TestHostKeys(t *testing.T) {
	ctx := context.Background()
	fake := &fakeParams{params: map[string]string{}}
	first, err := EnsureHostKey(ctx, fake, "h1")
	if err != nil || len(first) != 32 {
		t.Fatalf("first registration: %d bytes, %v", len(first), err)
	}
	again, err := EnsureHostKey(ctx, fake, "h1")
	if err != nil || !bytes.Equal(first, again) || fake.puts != 1 {
		t.Fatalf("after a restart: same key %v, %d writes, %v; want the same key and one write", bytes.Equal(first, again), fake.puts, err)
	}
	keys := NewHostKeys(fake)
	if got, err := keys.Key(ctx, "h1", false); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("the reports function reads %x, %v", got, err)
	}
	if _, err := keys.Key(ctx, "h2", false); !errors.Is(err, ErrUnknownHost) {
		t.Fatalf("a host that never registered: %v, want ErrUnknownHost", err)
	}
	// h1 may write any parameter under hosts/h1/, so it can make a key at
	// hosts/h1/x/report_key; "h1/x" still names no host.
	if _, err := EnsureHostKey(ctx, fake, "h1/x"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"h1/x", "h1/", "", "-h1"} {
		if got, err := keys.Key(ctx, id, true); !errors.Is(err, ErrUnknownHost) {
			t.Errorf("Key(%q) = %x, %v; want ErrUnknownHost", id, got, err)
		}
	}
}
