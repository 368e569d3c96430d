// Package dynamostore keeps environments, instances and leases in DynamoDB:
// the adapter behind the control plane's store.
//
// Two kinds of lease make the invariants hold without reading first: an
// environment lease (one active instance per environment) and a port lease
// (one instance per host port). Both are created in the same transaction as
// the instance, and deleted in the same transaction that makes it stopped or
// failed, so leases and instance states never disagree.
package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// DynamoAPI is the part of the DynamoDB client the store uses.
type DynamoAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// Tables names the three tables.
type Tables struct {
	Environments string
	Instances    string
	Leases       string
}

// Index names on the instances table.
const (
	ByEnvironment = "by_environment"
	ByCustomer    = "by_customer"
	ByHost        = "by_host"
	// ByDue holds only active instances (those with a due_at), keyed by
	// due_shard and sorted by due_at: the reaper reads the ones whose time
	// has come and nothing else.
	ByDue = "by_due"
)

// Shards spreads the by_due index, and the host records, over this many
// partition key values, so that no single key takes every write: a
// DynamoDB partition takes at most 1 000 writes a second. The reaper reads
// all of them each pass, one Query each.
const Shards = 16

// shardOf is the shard of an instance or host id.
func shardOf(id string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return strconv.Itoa(int(h.Sum32() % Shards))
}

// HistoryRetention is how long a stopped or failed instance stays queryable.
const HistoryRetention = 30 * 24 * time.Hour

// Store reads and writes the tables.
type Store struct {
	db     DynamoAPI
	tables Tables
	// PortCooldown is how long a host port an ended instance held stays
	// leased to nobody (config.Config.PortCooldown; 0: free at once). The
	// port lease becomes a cooling record until then: a route to the port
	// that outlived the instance (its deletion failed, or a Redis failover
	// lost it) lives at most its TTL, and must lead nowhere meanwhile, never
	// to the next customer's instance on that port.
	PortCooldown time.Duration
}

// New returns a store over the given tables.
func New(db DynamoAPI, tables Tables) *Store { return &Store{db: db, tables: tables} }

// lease is an item of the leases table.
type lease struct {
	Scope         string    `dynamodbav:"scope"`
	Key           string    `dynamodbav:"key"`
	InstanceID    string    `dynamodbav:"instance_id"`
	EnvironmentID string    `dynamodbav:"environment_id"`
	HostID        string    `dynamodbav:"host_id"`
	Port          int       `dynamodbav:"port"`
	CreatedAt     time.Time `dynamodbav:"created_at"`
	// FreeAfter (Unix seconds) marks a port lease cooling after its
	// instance ended: the port is leased again once it has passed.
	FreeAfter int64 `dynamodbav:"free_after,omitempty"`
}

// cooling reports whether a lease is a port's cooling record, and holds
// its port still at now.
func (l lease) cooling(now time.Time) (isCooling, holds bool) {
	return l.FreeAfter != 0, l.FreeAfter != 0 && now.Unix() <= l.FreeAfter
}

func environmentLeaseKey(environmentID string) map[string]types.AttributeValue {
	return leaseKey("environment#"+environmentID, "active")
}

func portLeaseScope(hostID string) string { return "port#" + hostID }

func portLeaseKey(hostID string, port int) map[string]types.AttributeValue {
	return leaseKey(portLeaseScope(hostID), strconv.Itoa(port))
}

func leaseKey(scope, key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"scope": &types.AttributeValueMemberS{Value: scope},
		"key":   &types.AttributeValueMemberS{Value: key},
	}
}

// Environment returns one environment.
func (s *Store) Environment(ctx context.Context, id string) (store.Environment, error) {
	var env store.Environment
	err := s.get(ctx, s.tables.Environments, map[string]types.AttributeValue{
		"environment_id": &types.AttributeValueMemberS{Value: id},
	}, &env)
	if err != nil {
		return store.Environment{}, fmt.Errorf("reading environment %s: %w", id, err)
	}
	return env, nil
}

// PutEnvironment writes an environment. The environment module does this in
// production; the local stack and tests use it.
func (s *Store) PutEnvironment(ctx context.Context, env store.Environment) error {
	item, err := attributevalue.MarshalMap(env)
	if err != nil {
		return fmt.Errorf("encoding environment: %w", err)
	}
	if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.tables.Environments, Item: item}); err != nil {
		return fmt.Errorf("writing environment %s: %w", env.ID, err)
	}
	return nil
}

// Instance returns one instance.
func (s *Store) Instance(ctx context.Context, id string) (instance.Instance, error) {
	var in instance.Instance
	err := s.get(ctx, s.tables.Instances, map[string]types.AttributeValue{
		"instance_id": &types.AttributeValueMemberS{Value: id},
	}, &in)
	if err != nil {
		return instance.Instance{}, fmt.Errorf("reading instance %s: %w", id, err)
	}
	return in, nil
}

// ActiveInstance returns the environment's active instance, found through its
// environment lease, or store.ErrNotFound.
func (s *Store) ActiveInstance(ctx context.Context, environmentID string) (instance.Instance, error) {
	var l lease
	if err := s.get(ctx, s.tables.Leases, environmentLeaseKey(environmentID), &l); err != nil {
		return instance.Instance{}, fmt.Errorf("reading lease of environment %s: %w", environmentID, err)
	}
	in, err := s.Instance(ctx, l.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		// The lease outlived its instance (it should not): report the
		// instance as ended so the next start takes the lease over.
		return instance.Instance{ID: l.InstanceID, EnvironmentID: environmentID, Status: instance.Stopped}, nil
	}
	return in, err
}

// LatestInstance returns the environment's most recent instance, active or
// not, or store.ErrNotFound if it never had one.
func (s *Store) LatestInstance(ctx context.Context, environmentID string) (instance.Instance, error) {
	list, err := s.History(ctx, environmentID, 1)
	if err != nil {
		return instance.Instance{}, err
	}
	if len(list) == 0 {
		return instance.Instance{}, fmt.Errorf("instances of environment %s: %w", environmentID, store.ErrNotFound)
	}
	return list[0], nil
}

// History returns up to limit instances of an environment, newest first.
func (s *Store) History(ctx context.Context, environmentID string, limit int32) ([]instance.Instance, error) {
	out, err := s.db.Query(ctx, &dynamodb.QueryInput{
		TableName:                 &s.tables.Instances,
		IndexName:                 aws.String(ByEnvironment),
		KeyConditionExpression:    aws.String("environment_id = :e"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":e": &types.AttributeValueMemberS{Value: environmentID}},
		ScanIndexForward:          aws.Bool(false),
		Limit:                     aws.Int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("querying instances of environment %s: %w", environmentID, err)
	}
	var list []instance.Instance
	if err := attributevalue.UnmarshalListOfMaps(out.Items, &list); err != nil {
		return nil, fmt.Errorf("decoding instances of environment %s: %w", environmentID, err)
	}
	return list, nil
}

// ActiveInstanceIDs returns the ids of every active instance, read from the
// environment leases with a scan of the whole leases table. The reaper used
// to do this every pass; the bench keeps it as the baseline of DueInstances.
func (s *Store) ActiveInstanceIDs(ctx context.Context) ([]string, error) {
	in := &dynamodb.ScanInput{
		TableName:                 &s.tables.Leases,
		FilterExpression:          aws.String("begins_with(#s, :p)"),
		ExpressionAttributeNames:  map[string]string{"#s": "scope"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":p": &types.AttributeValueMemberS{Value: "environment#"}},
		ConsistentRead:            aws.Bool(true),
	}
	var ids []string
	for {
		out, err := s.db.Scan(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("scanning environment leases: %w", err)
		}
		var leases []lease
		if err := attributevalue.UnmarshalListOfMaps(out.Items, &leases); err != nil {
			return nil, fmt.Errorf("decoding environment leases: %w", err)
		}
		for _, l := range leases {
			ids = append(ids, l.InstanceID)
		}
		if len(out.LastEvaluatedKey) == 0 {
			return ids, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// HeldPorts returns the host's ports no new instance may lease now: those
// of its active instances, and those still cooling after theirs ended.
func (s *Store) HeldPorts(ctx context.Context, hostID string) (map[int]bool, error) {
	leases, err := s.portLeases(ctx, hostID)
	if err != nil {
		return nil, err
	}
	held, now := map[int]bool{}, time.Now()
	for _, l := range leases {
		if isCooling, holds := l.cooling(now); !isCooling || holds {
			held[l.Port] = true
		}
	}
	return held, nil
}

// InstancePorts returns the host's ports leased to active instances (not
// those cooling).
func (s *Store) InstancePorts(ctx context.Context, hostID string) (map[int]bool, error) {
	leases, err := s.portLeases(ctx, hostID)
	if err != nil {
		return nil, err
	}
	ports := map[int]bool{}
	for _, l := range leases {
		if isCooling, _ := l.cooling(time.Time{}); !isCooling {
			ports[l.Port] = true
		}
	}
	return ports, nil
}

// HostInstanceIDs returns the ids of the host's active instances, read from
// its port leases (one per active instance): the reaper's one read of a
// host that fell silent.
func (s *Store) HostInstanceIDs(ctx context.Context, hostID string) ([]string, error) {
	leases, err := s.portLeases(ctx, hostID)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(leases))
	for _, l := range leases {
		if isCooling, _ := l.cooling(time.Time{}); !isCooling {
			ids = append(ids, l.InstanceID)
		}
	}
	return ids, nil
}

func (s *Store) portLeases(ctx context.Context, hostID string) ([]lease, error) {
	in := &dynamodb.QueryInput{
		TableName:                 &s.tables.Leases,
		KeyConditionExpression:    aws.String("#s = :s"),
		ExpressionAttributeNames:  map[string]string{"#s": "scope"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":s": &types.AttributeValueMemberS{Value: portLeaseScope(hostID)}},
	}
	var all []lease
	err := s.queryPages(ctx, in, func(items []map[string]types.AttributeValue) error {
		var leases []lease
		if err := attributevalue.UnmarshalListOfMaps(items, &leases); err != nil {
			return fmt.Errorf("decoding port leases: %w", err)
		}
		all = append(all, leases...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("port leases of host %s: %w", hostID, err)
	}
	return all, nil
}

func customerCounterKey(customerID string) map[string]types.AttributeValue {
	return leaseKey("customer#"+customerID, "active")
}

// instanceItem is an instance as stored: with its due_shard when it has a
// due_at, so that it is in the by_due index exactly while it is active.
func instanceItem(in instance.Instance) (map[string]types.AttributeValue, error) {
	if in.Status.Terminal() {
		in.DueAt = 0
	}
	item, err := attributevalue.MarshalMap(in)
	if err != nil {
		return nil, fmt.Errorf("encoding instance: %w", err)
	}
	if in.DueAt != 0 {
		item["due_shard"] = &types.AttributeValueMemberS{Value: shardOf(in.ID)}
	}
	return item, nil
}

// CreateInstance writes a new active instance together with its environment
// and port leases, and counts it against its customer. It fails with
// store.ErrEnvironmentBusy, store.ErrPortTaken or store.ErrCustomerLimit, and then writes
// nothing.
func (s *Store) CreateInstance(ctx context.Context, in instance.Instance, opts store.CreateOptions) error {
	staleInstanceID := opts.Stale
	item, err := instanceItem(in)
	if err != nil {
		return err
	}
	envLease, portLease := leasesOf(in)
	takeOver := "attribute_not_exists(#s) OR instance_id = :stale"
	stale := map[string]types.AttributeValue{":stale": &types.AttributeValueMemberS{Value: staleInstanceID + "\x00none"}}
	if staleInstanceID != "" {
		stale[":stale"] = &types.AttributeValueMemberS{Value: staleInstanceID}
	}
	names := map[string]string{"#s": "scope"}
	// A port is free when no lease holds it, or its cooling has passed.
	portFree := map[string]types.AttributeValue{":now": &types.AttributeValueMemberN{Value: strconv.FormatInt(time.Now().Unix(), 10)}}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Put: &types.Put{TableName: &s.tables.Instances, Item: item, ConditionExpression: aws.String("attribute_not_exists(instance_id)")}},
		{Put: &types.Put{TableName: &s.tables.Leases, Item: envLease, ConditionExpression: &takeOver, ExpressionAttributeNames: names, ExpressionAttributeValues: stale}},
		{Put: &types.Put{TableName: &s.tables.Leases, Item: portLease, ConditionExpression: aws.String("attribute_not_exists(#s) OR free_after < :now"), ExpressionAttributeNames: names, ExpressionAttributeValues: portFree}},
		{Update: s.countCustomer(in.CustomerID, 1, opts.CustomerLimit)},
	}})
	switch failed := canceledItems(err); {
	case err == nil:
		return nil
	case failed[3]:
		return fmt.Errorf("customer %s: %w", in.CustomerID, store.ErrCustomerLimit)
	case failed[1]:
		return fmt.Errorf("creating instance in environment %s: %w", in.EnvironmentID, store.ErrEnvironmentBusy)
	case failed[2]:
		return fmt.Errorf("leasing port %d on host %s: %w", in.ExternalPort, in.HostID, store.ErrPortTaken)
	case failed[0]:
		return fmt.Errorf("creating instance %s: %w", in.ID, store.ErrConflict)
	default:
		return fmt.Errorf("creating instance %s: %w", in.ID, err)
	}
}

// Update replaces an instance that was read at version prev; it fails with
// store.ErrConflict if someone wrote it since. When the new state is stopped or
// failed, the instance's leases are released in the same transaction.
func (s *Store) Update(ctx context.Context, in instance.Instance, prev int64) error {
	in.Version = prev + 1
	in.UpdatedAt = time.Now().UTC()
	if in.Status.Terminal() && in.ExpiresAt == 0 {
		in.ExpiresAt = in.UpdatedAt.Add(HistoryRetention).Unix()
	}
	item, err := instanceItem(in)
	if err != nil {
		return err
	}
	put := &types.Put{
		TableName:                 &s.tables.Instances,
		Item:                      item,
		ConditionExpression:       aws.String("version = :prev"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":prev": &types.AttributeValueMemberN{Value: strconv.FormatInt(prev, 10)}},
	}
	items := []types.TransactWriteItem{{Put: put}}
	if in.Status.Terminal() {
		items = append(items, types.TransactWriteItem{Update: s.countCustomer(in.CustomerID, -1, 0)})
		// Release only what this instance still holds; a lease already gone is fine.
		mine := aws.String("attribute_not_exists(#s) OR instance_id = :id")
		names := map[string]string{"#s": "scope"}
		id := map[string]types.AttributeValue{":id": &types.AttributeValueMemberS{Value: in.ID}}
		items = append(items, types.TransactWriteItem{Delete: &types.Delete{
			TableName: &s.tables.Leases, Key: environmentLeaseKey(in.EnvironmentID),
			ConditionExpression: mine, ExpressionAttributeNames: names, ExpressionAttributeValues: id,
		}})
		if s.PortCooldown > 0 {
			_, cooling := leasesOf(in)
			cooling["free_after"] = &types.AttributeValueMemberN{Value: strconv.FormatInt(in.UpdatedAt.Add(s.PortCooldown).Unix(), 10)}
			items = append(items, types.TransactWriteItem{Put: &types.Put{
				TableName: &s.tables.Leases, Item: cooling,
				ConditionExpression: mine, ExpressionAttributeNames: names, ExpressionAttributeValues: id,
			}})
		} else {
			items = append(items, types.TransactWriteItem{Delete: &types.Delete{
				TableName: &s.tables.Leases, Key: portLeaseKey(in.HostID, in.ExternalPort),
				ConditionExpression: mine, ExpressionAttributeNames: names, ExpressionAttributeValues: id,
			}})
		}
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	if failed := canceledItems(err); len(failed) > 0 {
		return fmt.Errorf("updating instance %s to %s: %w", in.ID, in.Status, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("updating instance %s to %s: %w", in.ID, in.Status, err)
	}
	return nil
}

// countCustomer adds delta to the customer's count of active instances;
// with limit > 0 an increment fails once the count has reached it.
func (s *Store) countCustomer(customerID string, delta, limit int) *types.Update {
	u := &types.Update{
		TableName:        &s.tables.Leases,
		Key:              customerCounterKey(customerID),
		UpdateExpression: aws.String("SET active = if_not_exists(active, :zero) + :d"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":zero": &types.AttributeValueMemberN{Value: "0"},
			":d":    &types.AttributeValueMemberN{Value: strconv.Itoa(delta)},
		},
	}
	if limit > 0 {
		u.ConditionExpression = aws.String("attribute_not_exists(active) OR active < :max")
		u.ExpressionAttributeValues[":max"] = &types.AttributeValueMemberN{Value: strconv.Itoa(limit)}
	}
	return u
}

func leasesOf(in instance.Instance) (env, port map[string]types.AttributeValue) {
	mk := func(key map[string]types.AttributeValue) map[string]types.AttributeValue {
		item, _ := attributevalue.MarshalMap(lease{
			InstanceID: in.ID, EnvironmentID: in.EnvironmentID, HostID: in.HostID,
			Port: in.ExternalPort, CreatedAt: in.CreatedAt,
		})
		for k, v := range key {
			item[k] = v
		}
		return item
	}
	return mk(environmentLeaseKey(in.EnvironmentID)), mk(portLeaseKey(in.HostID, in.ExternalPort))
}

// canceledItems returns the indexes of transaction items whose condition
// failed, or nil if err is not a canceled transaction.
func canceledItems(err error) map[int]bool {
	var tce *types.TransactionCanceledException
	if !errors.As(err, &tce) {
		return nil
	}
	failed := map[int]bool{}
	for i, r := range tce.CancellationReasons {
		if aws.ToString(r.Code) == "ConditionalCheckFailed" {
			failed[i] = true
		}
	}
	if len(failed) == 0 {
		failed[-1] = true // canceled for another reason (e.g. a concurrent transaction)
	}
	return failed
}

func (s *Store) get(ctx context.Context, table string, key map[string]types.AttributeValue, v any) error {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &table, Key: key, ConsistentRead: aws.Bool(true)})
	if err != nil {
		return err
	}
	if out.Item == nil {
		return store.ErrNotFound
	}
	if err := attributevalue.UnmarshalMap(out.Item, v); err != nil {
		return fmt.Errorf("decoding item: %w", err)
	}
	return nil
}

// NewClient returns the DynamoDB client of the store, from the shared AWS
// configuration (awsconf.Load).
func NewClient(cfg aws.Config) *dynamodb.Client {
	local := os.Getenv("AWS_ENDPOINT_URL") != ""
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		// The local emulator computes no CRC32 of its responses.
		o.DisableValidateResponseChecksum = local
	})
}

// TablesFromEnv reads the table names from ENVIRONMENTS_TABLE,
// INSTANCES_TABLE and LEASES_TABLE, as the template sets them.
func TablesFromEnv() Tables {
	return Tables{
		Environments: os.Getenv("ENVIRONMENTS_TABLE"),
		Instances:    os.Getenv("INSTANCES_TABLE"),
		Leases:       os.Getenv("LEASES_TABLE"),
	}
}
