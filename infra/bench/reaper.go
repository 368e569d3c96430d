package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/envjupyter/envjupyter/functions/reaper/pass"
	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/functions/store/dynamostore"
	appconfig "github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// The reaper benchmark's timing: what makes an instance due.
var reaperTimings = appconfig.Config{
	StartTimeout: 2 * time.Minute, StopTimeout: 10 * time.Minute,
	IdleTimeout: time.Hour, HostSilence: 5 * time.Minute,
}

// secondPassAfter is how far the service's clock moves between the two
// passes: the second group of instances becomes due in between.
const secondPassAfter = 3 * time.Minute

// instancesPerHost is how many background instances share a host.
const instancesPerHost = 100

// countingDB counts what the store reads from DynamoDB: requests and items
// (a Query or Scan counts every item it evaluates, as DynamoDB bills them),
// apart for the host records, whose number follows the hosts.
type countingDB struct {
	dynamostore.DynamoAPI
	hostsTable                   string
	requests, items, hostRecords atomic.Int64
}

func (c *countingDB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	out, err := c.DynamoAPI.GetItem(ctx, in, opts...)
	c.requests.Add(1)
	if err == nil && out.Item != nil {
		c.items.Add(1)
	}
	return out, err
}

func (c *countingDB) Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	out, err := c.DynamoAPI.Query(ctx, in, opts...)
	c.requests.Add(1)
	if err != nil {
		return out, err
	}
	if scope, ok := in.ExpressionAttributeValues[":s"].(*types.AttributeValueMemberS); ok && aws.ToString(in.TableName) == c.hostsTable && strings.HasPrefix(scope.Value, "hosts#") {
		c.hostRecords.Add(int64(out.ScannedCount))
	} else {
		c.items.Add(int64(out.ScannedCount))
	}
	return out, err
}

func (c *countingDB) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	out, err := c.DynamoAPI.Scan(ctx, in, opts...)
	c.requests.Add(1)
	if err == nil {
		c.items.Add(int64(out.ScannedCount))
	}
	return out, err
}

func (c *countingDB) reset() (requests, items, hostRecords int64) {
	return c.requests.Swap(0), c.items.Swap(0), c.hostRecords.Swap(0)
}

// countingCommands stands in for the hosts' queues: there are no hosts.
type countingCommands struct{ sent atomic.Int64 }

func (c *countingCommands) Send(context.Context, string, message.Command) error {
	c.sent.Add(1)
	return nil
}

// reaperGroup is the instances made due for one pass, by reason.
type reaperGroup struct {
	startTimeout, stopTimeout, idle, hostLost []string
	// recheck: running and active, whose next look has come; the reaper
	// reads them and sets a later one.
	recheck  []string
	lostHost string
	at       time.Time // the pass's clock
}

func (g reaperGroup) size() int {
	return len(g.startTimeout) + len(g.stopTimeout) + len(g.idle) + len(g.hostLost) + len(g.recheck)
}

// reaperPass is what one pass read, did and took.
type reaperPass struct {
	due                          int
	requests, items, hostRecords int64
	took                         time.Duration
	reaped                       pass.Reaped
	handled                      int // of the group's instances, in the state their reason leads to
}

// reaperSize is the figures at one number of active instances.
type reaperSize struct {
	total        int
	fill         time.Duration
	first, more  reaperPass
	scanRequests int64
	scanItems    int64
	scanTook     time.Duration
}

func (b *bench) benchReaper(ctx context.Context) error {
	dueSmall, dueLarge := 100, 500
	if b.smoke {
		dueSmall, dueLarge = 8, 20
	}
	var sizes []reaperSize
	for _, n := range b.reaperSizes {
		if n < dueSmall+dueLarge+instancesPerHost/10 {
			return fmt.Errorf("-reaper %d: at least %d instances are needed", n, dueSmall+dueLarge+instancesPerHost/10)
		}
		b.logf("reaper: %d active instances (%d then %d of them due), written straight into tables of their own", n, dueSmall, dueLarge)
		s, err := b.reaperAt(ctx, n, dueSmall, dueLarge)
		if err != nil {
			return err
		}
		b.logf("  filled in %s; pass 1: %d due, %d items (+%d host records) read in %d requests, %s; pass 2: %d due, %d items (+%d host records) read in %d requests, %s; full scan: %d items in %d requests, %s",
			s.fill.Round(10*time.Millisecond), s.first.due, s.first.items, s.first.hostRecords, s.first.requests, s.first.took.Round(time.Millisecond),
			s.more.due, s.more.items, s.more.hostRecords, s.more.requests, s.more.took.Round(time.Millisecond),
			s.scanItems, s.scanRequests, s.scanTook.Round(time.Millisecond))
		sizes = append(sizes, s)
	}
	var results, baselines, ratios, notes []string
	allHandled, flat := true, true
	for _, s := range sizes {
		results = append(results, fmt.Sprintf("%d active: %d due → %d items read (+%d host records), %s; %d due → %d items read (+%d host records), %s",
			s.total, s.first.due, s.first.items, s.first.hostRecords, s.first.took.Round(time.Millisecond),
			s.more.due, s.more.items, s.more.hostRecords, s.more.took.Round(time.Millisecond)))
		baselines = append(baselines, fmt.Sprintf("%d active: %d items read, %s", s.total, s.scanItems, s.scanTook.Round(time.Millisecond)))
		ratios = append(ratios, fmt.Sprintf("%d: 1/%.0f", s.total, float64(s.scanItems)/float64(s.first.items)))
		notes = append(notes, fmt.Sprintf("%d active (filled in %s): pass 1 %+v handled %d/%d; pass 2 %+v handled %d/%d",
			s.total, s.fill.Round(10*time.Millisecond), s.first.reaped, s.first.handled, s.first.due, s.more.reaped, s.more.handled, s.more.due))
		allHandled = allHandled && s.first.handled == s.first.due && s.more.handled == s.more.due
	}
	// Reads follow the due count: the same due count reads about the same
	// at every size (within the host records and empty index pages, which
	// do not grow with instances), and the larger due count reads more.
	for _, s := range sizes {
		flat = flat && s.first.items <= int64(3*s.first.due)+200 && s.more.items > s.first.items
	}
	b.record(figure{
		ID:       "9",
		Name:     "reaper pass (items read and duration by active and due instances)",
		Result:   strings.Join(results, "; "),
		Baseline: "full scan of the leases and a read of every active instance (the reaper before the by_due index): " + strings.Join(baselines, "; "),
		Ratio:    "items read, first pass / full scan: " + strings.Join(ratios, ", "),
		Target:   "every due instance handled; items read grow with the due count, not the total",
		Verdict:  b.verdict(allHandled && flat),
		Note: "Items read count what DynamoDB bills a read for: each GetItem that finds an item, each item a Query or Scan evaluates (index entries for by_due). " +
			fmt.Sprintf("Host records (one per host, %d instances per host here) are counted apart: every pass reads them all, so they follow the hosts, not the instances or what is due. ", instancesPerHost) +
			"Due by reason, in equal parts: starts past their timeout, stops never confirmed, idle instances, the instances of one host whose record fell silent (found through the host record, not the index), and active running instances whose recheck has come (read, found active, given a later due_at: the bulk of a large fleet's passes). " +
			"The pass runs the real control.Service.Reap against kumo over HTTP with a counting DynamoDB client and no hosts (commands are counted, not sent). " +
			"kumo evaluates a Query by walking the table in memory, so the pass's duration here grows with the table while DynamoDB's would not; the items read are what carries over. " +
			strings.Join(notes, ". "),
	})
	return nil
}

// reaperAt fills tables of its own with total active instances, makes
// dueSmall of them due, runs a pass, makes dueLarge more due (by moving the
// service's clock on), runs another, then reads everything the way the
// reaper used to.
func (b *bench) reaperAt(ctx context.Context, total, dueSmall, dueLarge int) (reaperSize, error) {
	res := reaperSize{total: total}
	tables := dynamostore.Tables{
		Environments: b.stack.Resolver.Refs["EnvironmentsTable"],
		Instances:    fmt.Sprintf("%s-reaper-%d-instances", stackName, total),
		Leases:       fmt.Sprintf("%s-reaper-%d-leases", stackName, total),
	}
	db := b.stack.AWS.DynamoDB
	for id, name := range map[string]string{"InstancesTable": tables.Instances, "LeasesTable": tables.Leases} {
		_, _ = db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)}) // a killed run's
		if err := b.stack.CreateTableLike(ctx, id, name); err != nil {
			return res, fmt.Errorf("creating %s: %w", name, err)
		}
		defer func() {
			if _, err := db.DeleteTable(context.WithoutCancel(ctx), &dynamodb.DeleteTableInput{TableName: aws.String(name)}); err != nil {
				b.logf("  deleting %s: %v", name, err)
			}
		}()
	}
	counting := &countingDB{DynamoAPI: db, hostsTable: tables.Leases}
	st := dynamostore.New(counting, tables)
	filling := time.Now()
	t0 := filling.UTC().Truncate(time.Second)
	first, more, err := b.fillReaperTables(ctx, st, t0, total, dueSmall, dueLarge)
	if err != nil {
		return res, err
	}
	res.fill = time.Since(filling)

	clock := t0
	hosts := &countingCommands{}
	run := func(g reaperGroup) (reaperPass, error) {
		counting.reset()
		start := time.Now()
		r, err := pass.Run(ctx, st, reaperTimings, func() time.Time { return clock }, hosts)
		p := reaperPass{due: g.size(), took: time.Since(start), reaped: r}
		p.requests, p.items, p.hostRecords = counting.reset()
		if err != nil {
			return p, fmt.Errorf("reaper pass over %d instances: %w", total, err)
		}
		p.handled, err = handled(ctx, st, g)
		return p, err
	}
	if res.first, err = run(first); err != nil {
		return res, err
	}
	clock = t0.Add(secondPassAfter)
	if res.more, err = run(more); err != nil {
		return res, err
	}

	// The baseline: what the reaper read before, every active instance.
	counting.reset()
	start := time.Now()
	ids, err := st.ActiveInstanceIDs(ctx)
	if err != nil {
		return res, err
	}
	for _, id := range ids {
		if _, err := st.Instance(ctx, id); err != nil {
			return res, err
		}
	}
	res.scanTook = time.Since(start)
	res.scanRequests, res.scanItems, _ = counting.reset()
	return res, nil
}

// fillReaperTables writes total active instances through the store (the
// same transaction as a start: instance, leases, customer count), with
// their state as it would be at t0. Most are running, recently heard from
// and active; two groups are due, the first at t0, the second only at
// t0+secondPassAfter.
func (b *bench) fillReaperTables(ctx context.Context, st *dynamostore.Store, t0 time.Time, total, dueSmall, dueLarge int) (first, more reaperGroup, err error) {
	hosts := max(1, (total-dueSmall-dueLarge)/instancesPerHost)
	var jobs []instance.Instance
	mk := func(i int, host string, port int) instance.Instance {
		return instance.Instance{
			ID: fmt.Sprintf("ji-reaper-%07d", i), EnvironmentID: fmt.Sprintf("env-reaper-%07d", i),
			CustomerID: fmt.Sprintf("cust-reaper-%d", i/10), HostID: host, ContainerID: "none",
			ExternalPort: port, InternalPort: instance.InternalPort, Status: instance.Running,
			CreatedAt: t0.Add(-time.Hour), UpdatedAt: t0.Add(-10 * time.Second), ReportedAt: t0.Add(-10 * time.Second),
			Health:  &instance.Health{CheckedAt: t0.Add(-10 * time.Second), LastActivity: t0.Add(-time.Minute)},
			Version: 1,
		}
	}
	// due makes a group of n due instances, a fifth per reason; late
	// says whether they become due only at the second pass.
	next := 0
	due := func(n int, late bool) reaperGroup {
		g := reaperGroup{lostHost: "rh-lost-early", at: t0}
		shift := time.Duration(0)
		if late {
			g.lostHost, shift, g.at = "rh-lost-late", secondPassAfter, t0.Add(secondPassAfter)
		}
		for k := range n {
			i := next
			next++
			in := mk(i, fmt.Sprintf("rh-%d", i%hosts), 20000+i/hosts)
			// Just past each deadline at the pass's time (t0 + shift),
			// not yet at t0 for the late group.
			at := t0.Add(shift - time.Second)
			switch k % 5 {
			case 0:
				in.Status, in.Health, in.CreatedAt = instance.Starting, nil, at.Add(-reaperTimings.StartTimeout-30*time.Second-time.Second)
				in.DueAt = at.Unix()
				g.startTimeout = append(g.startTimeout, in.ID)
			case 1:
				in.Status, in.UpdatedAt, in.StatusReason = instance.Stopping, at.Add(-reaperTimings.StopTimeout-time.Second), "user"
				in.DueAt = at.Unix()
				g.stopTimeout = append(g.stopTimeout, in.ID)
			case 2:
				in.Health.LastActivity = at.Add(-reaperTimings.IdleTimeout - time.Second)
				in.DueAt = at.Unix()
				g.idle = append(g.idle, in.ID)
			case 3:
				// Its host's record went silent; in the index it is not due.
				in.HostID, in.ExternalPort = g.lostHost, 20000+k
				in.ReportedAt = at.Add(-reaperTimings.HostSilence - time.Second)
				in.DueAt = t0.Add(20 * time.Minute).Unix()
				g.hostLost = append(g.hostLost, in.ID)
			case 4:
				// Active a minute ago; its look was due when it was armed.
				in.Health.LastActivity, in.ReportedAt = at.Add(-time.Minute), at.Add(-10*time.Second)
				in.DueAt = at.Unix()
				g.recheck = append(g.recheck, in.ID)
			}
			jobs = append(jobs, in)
		}
		return g
	}
	first, more = due(dueSmall, false), due(dueLarge, true)
	for i := next; i < total; i++ {
		in := mk(i, fmt.Sprintf("rh-%d", i%hosts), 20000+i/hosts)
		// Spread over the half hour of the recheck: none due at either pass.
		in.DueAt = t0.Add(5*time.Minute + time.Duration(i%1500)*time.Second).Unix()
		jobs = append(jobs, in)
	}
	work := make(chan instance.Instance)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for in := range work {
				if err := st.CreateInstance(ctx, in, store.CreateOptions{}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, in := range jobs {
		if ctx.Err() != nil {
			break
		}
		work <- in
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return first, more, fmt.Errorf("writing instances: %w", firstErr)
	}
	// Every host was heard just now, but the two lost ones.
	for h := range hosts {
		if err := st.HostHeard(ctx, fmt.Sprintf("rh-%d", h), t0); err != nil {
			return first, more, err
		}
	}
	if err := st.HostHeard(ctx, first.lostHost, t0.Add(-reaperTimings.HostSilence-time.Minute)); err != nil {
		return first, more, err
	}
	if err := st.HostHeard(ctx, more.lostHost, t0.Add(secondPassAfter-reaperTimings.HostSilence-time.Minute)); err != nil {
		return first, more, err
	}
	return first, more, ctx.Err()
}

// handled counts the group's instances that are in the state their reason
// leads to.
func handled(ctx context.Context, st *dynamostore.Store, g reaperGroup) (int, error) {
	n := 0
	check := func(ids []string, status instance.Status, reason string) error {
		for _, id := range ids {
			in, err := st.Instance(ctx, id)
			if err != nil {
				return err
			}
			if in.Status == status && strings.HasPrefix(in.StatusReason, reason) {
				n++
			}
		}
		return nil
	}
	for _, id := range g.recheck {
		in, err := st.Instance(ctx, id)
		if err != nil {
			return n, err
		}
		if in.Status == instance.Running && in.DueAt > g.at.Unix() {
			n++
		}
	}
	for _, c := range []struct {
		ids    []string
		status instance.Status
		reason string
	}{
		{g.startTimeout, instance.Failed, instance.ReasonStartTimeout},
		{g.stopTimeout, instance.Stopped, instance.ReasonStopTimeout},
		{g.idle, instance.Stopping, instance.ReasonIdle},
		{g.hostLost, instance.Failed, instance.ReasonHostLost},
	} {
		if err := check(c.ids, c.status, c.reason); err != nil {
			return n, err
		}
	}
	return n, nil
}
