package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/envjupyter/envjupyter/functions/store"
)

// DuePage is how many ids one Query of the by_due index returns at most:
// the reaper works through a page before it reads the next.
const DuePage = 200

// DueInstances calls page with the ids of the active instances whose due_at
// is at or before now, a page at a time, shard after shard, earliest first
// within a shard. It reads the by_due index only (keys), so what it reads
// grows with the instances that are due, not with all of them. It stops at
// the first error page returns. The first shard turns with the clock, so a
// pass cut short by its time budget leaves different shards for the next.
func (s *Store) DueInstances(ctx context.Context, now time.Time, page func(ids []string) error) error {
	first := int(now.Unix() % Shards)
	for i := range Shards {
		shard := (first + i) % Shards
		in := &dynamodb.QueryInput{
			TableName:              &s.tables.Instances,
			IndexName:              aws.String(ByDue),
			KeyConditionExpression: aws.String("due_shard = :s AND due_at <= :now"),
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":s":   &types.AttributeValueMemberS{Value: strconv.Itoa(shard)},
				":now": &types.AttributeValueMemberN{Value: strconv.FormatInt(now.Unix(), 10)},
			},
			ProjectionExpression: aws.String("instance_id"),
			Limit:                aws.Int32(DuePage),
		}
		err := s.queryPages(ctx, in, func(items []map[string]types.AttributeValue) error {
			ids := make([]string, 0, len(items))
			for _, item := range items {
				if v, ok := item["instance_id"].(*types.AttributeValueMemberS); ok {
					ids = append(ids, v.Value)
				}
			}
			if len(ids) == 0 {
				return nil
			}
			return page(ids)
		})
		if err != nil {
			return fmt.Errorf("due instances (shard %d): %w", shard, err)
		}
	}
	return nil
}

// Rearm sets when the reaper looks at an instance next, if the instance is
// still at version. It changes neither the version nor updated_at: it is
// the reaper's note, not a change of the instance, and a writer that read
// the instance before carries the earlier time, which only brings the next
// look forward. It fails with store.ErrConflict if the instance changed.
func (s *Store) Rearm(ctx context.Context, id string, version int64, due time.Time) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           &s.tables.Instances,
		Key:                 map[string]types.AttributeValue{"instance_id": &types.AttributeValueMemberS{Value: id}},
		UpdateExpression:    aws.String("SET due_at = :due, due_shard = :shard"),
		ConditionExpression: aws.String("version = :v"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":due":   &types.AttributeValueMemberN{Value: strconv.FormatInt(due.Unix(), 10)},
			":shard": &types.AttributeValueMemberS{Value: shardOf(id)},
			":v":     &types.AttributeValueMemberN{Value: strconv.FormatInt(version, 10)},
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return fmt.Errorf("re-arming instance %s: %w", id, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("re-arming instance %s: %w", id, err)
	}
	return nil
}

// A host record says when a host was last heard from; it lives in the
// leases table under scope hosts#<shard>, key the host id.
type hostRecord struct {
	HostID  string `dynamodbav:"key"`
	HeardAt int64  `dynamodbav:"heard_at"` // Unix seconds
}

func hostScope(shard string) string { return "hosts#" + shard }

func hostKey(hostID string) map[string]types.AttributeValue {
	return leaseKey(hostScope(shardOf(hostID)), hostID)
}

// HostHeard records that the host was heard from at the given time; an
// earlier time than the one recorded changes nothing.
func (s *Store) HostHeard(ctx context.Context, hostID string, at time.Time) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 &s.tables.Leases,
		Key:                       hostKey(hostID),
		UpdateExpression:          aws.String("SET heard_at = :t"),
		ConditionExpression:       aws.String("attribute_not_exists(heard_at) OR heard_at < :t"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": &types.AttributeValueMemberN{Value: strconv.FormatInt(at.Unix(), 10)}},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("recording host %s heard: %w", hostID, err)
	}
	return nil
}

// HostLastHeard returns when the host was last heard from, or
// store.ErrNotFound when it has no record (never heard, or forgotten).
func (s *Store) HostLastHeard(ctx context.Context, hostID string) (time.Time, error) {
	var r hostRecord
	if err := s.get(ctx, s.tables.Leases, hostKey(hostID), &r); err != nil {
		return time.Time{}, fmt.Errorf("reading host %s: %w", hostID, err)
	}
	return time.Unix(r.HeardAt, 0).UTC(), nil
}

// SilentHosts returns the hosts last heard from before the given time. It
// reads every host record (one Query per shard): its cost grows with the
// hosts, not with their instances.
func (s *Store) SilentHosts(ctx context.Context, before time.Time) ([]store.Host, error) {
	var hosts []store.Host
	for shard := range Shards {
		in := &dynamodb.QueryInput{
			TableName:                &s.tables.Leases,
			KeyConditionExpression:   aws.String("#s = :s"),
			FilterExpression:         aws.String("heard_at < :t"),
			ExpressionAttributeNames: map[string]string{"#s": "scope"},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":s": &types.AttributeValueMemberS{Value: hostScope(strconv.Itoa(shard))},
				":t": &types.AttributeValueMemberN{Value: strconv.FormatInt(before.Unix(), 10)},
			},
		}
		err := s.queryPages(ctx, in, func(items []map[string]types.AttributeValue) error {
			var recs []hostRecord
			if err := attributevalue.UnmarshalListOfMaps(items, &recs); err != nil {
				return fmt.Errorf("decoding host records: %w", err)
			}
			for _, r := range recs {
				hosts = append(hosts, store.Host{ID: r.HostID, HeardAt: time.Unix(r.HeardAt, 0).UTC()})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("host records (shard %d): %w", shard, err)
		}
	}
	return hosts, nil
}

// ForgetHost deletes the record of a silent host that has nothing left, if
// it was not heard from since heardAt; a host that speaks again gets a new
// one.
func (s *Store) ForgetHost(ctx context.Context, h store.Host) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 &s.tables.Leases,
		Key:                       hostKey(h.ID),
		ConditionExpression:       aws.String("heard_at = :t"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": &types.AttributeValueMemberN{Value: strconv.FormatInt(h.HeardAt.Unix(), 10)}},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("forgetting host %s: %w", h.ID, err)
	}
	return nil
}

// queryPages runs a Query page after page, handing each page's items to
// each, until the last page or the first error.
func (s *Store) queryPages(ctx context.Context, in *dynamodb.QueryInput, each func(items []map[string]types.AttributeValue) error) error {
	for {
		out, err := s.db.Query(ctx, in)
		if err != nil {
			return fmt.Errorf("querying: %w", err)
		}
		if err := each(out.Items); err != nil {
			return err
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}
