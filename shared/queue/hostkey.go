package queue

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/message"
)

// KeySSMAPI is the part of the SSM client that keeps hosts' report keys.
type KeySSMAPI interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
	PutParameter(ctx context.Context, in *ssm.PutParameterInput, opts ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
}

// EnsureHostKey returns the key a host signs its reports with, creating it
// the first time. It is created once and never overwritten, so a restarted
// host keeps it, and a host cannot take over another's (its policy lets it
// write only its own parameters).
func EnsureHostKey(ctx context.Context, client KeySSMAPI, hostID string) ([]byte, error) {
	name := config.HostReportKeyParameter(hostID)
	key, err := readKey(ctx, client, name)
	var missing *ssmtypes.ParameterNotFound
	if !errors.As(err, &missing) {
		return key, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	_, err = client.PutParameter(ctx, &ssm.PutParameterInput{
		Name: &name, Type: ssmtypes.ParameterTypeSecureString, Overwrite: aws.Bool(false),
		Value: aws.String(base64.StdEncoding.EncodeToString(secret)),
	})
	var exists *ssmtypes.ParameterAlreadyExists
	if errors.As(err, &exists) {
		return readKey(ctx, client, name) // another copy of this host made it first
	}
	if err != nil {
		return nil, fmt.Errorf("creating the report key of host %s: %w", hostID, err)
	}
	return secret, nil
}

func readKey(ctx context.Context, client KeySSMAPI, name string) ([]byte, error) {
	out, err := client.GetParameter(ctx, &ssm.GetParameterInput{Name: &name, WithDecryption: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	key, err := base64.StdEncoding.DecodeString(aws.ToString(out.Parameter.Value))
	if err != nil || len(key) < 16 {
		return nil, fmt.Errorf("%s is not a base64 key of at least 16 bytes", name)
	}
	return key, nil
}

// hostKeyTTL is how long the reports function trusts a cached host key.
const hostKeyTTL = 5 * time.Minute

// HostKeys reads hosts' report keys for the reports function, with a cache.
type HostKeys struct {
	ssm KeySSMAPI

	mu    sync.Mutex
	cache map[string]cachedKey
}

type cachedKey struct {
	key []byte
	at  time.Time
}

// NewHostKeys returns a reader of hosts' report keys.
func NewHostKeys(client KeySSMAPI) *HostKeys {
	return &HostKeys{ssm: client, cache: map[string]cachedKey{}}
}

// ErrUnknownHost means the host has no report key: it never registered.
var ErrUnknownHost = errors.New("host has no report key")

// Key returns the report key of a host; fresh reads it again from SSM
// unless the cached copy is recent (a host's key that was replaced).
func (k *HostKeys) Key(ctx context.Context, hostID string, fresh bool) ([]byte, error) {
	// The id becomes part of the parameter's path, and each host may write
	// every parameter under its own hosts/<id>/: "h1/x" would read a key h1
	// wrote itself, so only a valid host id names a key.
	if !message.ValidHostID(hostID) {
		return nil, fmt.Errorf("%w: %q is not a host id", ErrUnknownHost, hostID)
	}
	k.mu.Lock()
	c, ok := k.cache[hostID]
	k.mu.Unlock()
	age := time.Since(c.at)
	if ok && age < hostKeyTTL && (!fresh || age < 10*time.Second) {
		return c.key, nil
	}
	key, err := readKey(ctx, k.ssm, config.HostReportKeyParameter(hostID))
	var missing *ssmtypes.ParameterNotFound
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownHost, hostID)
	}
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.cache[hostID] = cachedKey{key: key, at: time.Now()}
	k.mu.Unlock()
	return key, nil
}
