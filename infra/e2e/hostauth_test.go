package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/shared/queue"
)

// hostKey reads a host's report key, as that host can.
func hostKey(t *testing.T, hostID string) []byte {
	t.Helper()
	out, err := stack.AWS.SSM.GetParameter(context.Background(), &ssm.GetParameterInput{
		Name: aws.String(config.HostReportKeyParameter(hostID)), WithDecryption: aws.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(aws.ToString(out.Parameter.Value))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// sendReport puts a report on the reports queue signed with key (none when
// key is nil) and returns the message id.
func sendReport(t *testing.T, queueURL string, r message.Report, key []byte) string {
	t.Helper()
	body, err := message.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	in := &sqs.SendMessageInput{QueueUrl: &queueURL, MessageBody: &body}
	if key != nil {
		in.MessageAttributes = map[string]sqstypes.MessageAttributeValue{
			message.SignatureAttribute: {DataType: aws.String("String"), StringValue: aws.String(message.Sign(key, body))},
		}
	}
	out, err := stack.AWS.SQS.SendMessage(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.MessageId)
}

// A host speaks only for itself: reports about another host's instance,
// unsigned, signed with the key of another registered host, or with a key
// made up, or naming a host id that is none (signed with a key the host
// wrote under its own parameters), are dropped by the reports function, and
// the instance is not changed by them. The test waits until every one of
// them was judged before it looks at the instance.
func TestReportsSpeakOnlyForTheirHost(t *testing.T) {
	env, in := running(t)
	stopAtEnd(t, customerA, env)
	rec := stored(t, in.InstanceID)
	ctx := context.Background()
	// Another host registers, as its sidecar would: its own key.
	other := "test-host-forger"
	otherKey, err := queue.EnsureHostKey(ctx, stack.AWS.SSM, other)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = stack.AWS.SSM.DeleteParameter(context.Background(), &ssm.DeleteParameterInput{Name: aws.String(config.HostReportKeyParameter(other))})
	})
	madeUp := make([]byte, 32)
	_, _ = rand.Read(madeUp)

	forged := message.Report{V: 1, InstanceID: rec.ID, HostID: rec.HostID, Status: instance.Failed, Reason: "forged", At: time.Now().UTC()}
	reportsQueue := parameter(t, "/envjupyter/reports_queue_url")
	var ids []string
	for _, key := range [][]byte{nil, otherKey, madeUp} {
		ids = append(ids, sendReport(t, reportsQueue, forged, key))
	}
	// A host may write every parameter under its own hosts/<id>/, so this
	// instance's host could make a key at hosts/<id>/x/report_key and sign
	// reports naming the host "<id>/x" with it: no host id, so malformed.
	nested := rec.HostID + "/x"
	nestedKey, err := queue.EnsureHostKey(ctx, stack.AWS.SSM, nested)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = stack.AWS.SSM.DeleteParameter(context.Background(), &ssm.DeleteParameterInput{Name: aws.String(config.HostReportKeyParameter(nested))})
	})
	asNested := forged
	asNested.HostID = nested
	nestedID := sendReport(t, reportsQueue, asNested, nestedKey)
	// The other host naming itself in a report of this instance: authentic,
	// but not this instance's host, so the control plane ignores it (and
	// says so: the line names the instance and the other host).
	asItself := forged
	asItself.HostID = other
	asItselfID := sendReport(t, reportsQueue, asItself, otherKey)
	ignored := func(logs string) bool {
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, "ignoring a report from a host the instance is not on") &&
				strings.Contains(line, rec.ID) && strings.Contains(line, other) {
				return true
			}
		}
		return false
	}

	// Every case is judged before the instance is looked at: the first three
	// and the malformed one are logged with their message id; the last,
	// which passes the signature check, by the control plane's warning (or,
	// wrongly, with its message id as a drop, or by ending the instance:
	// the checks below then say which).
	dropped := append(append([]string(nil), ids...), nestedID)
	eventually(t, 30*time.Second, func() error {
		if stored(t, in.InstanceID).Status.Terminal() {
			return nil
		}
		logs := functionLogs(t, "ReportsFunction")
		for _, id := range dropped {
			if !strings.Contains(logs, id) {
				return fmt.Errorf("the reports function has not judged message %s yet", id)
			}
		}
		if !ignored(logs) && !strings.Contains(logs, asItselfID) {
			return fmt.Errorf("the reports function has not judged message %s (host %s about this instance) yet", asItselfID, other)
		}
		return nil
	})
	logs := functionLogs(t, "ReportsFunction")
	for _, id := range ids {
		if !logLineHas(logs, id, "may not speak for the host") {
			t.Errorf("message %s was not dropped as forged", id)
		}
	}
	if !logLineHas(logs, nestedID, "dropping malformed report") {
		t.Errorf("message %s (host id %q) was not dropped as malformed", nestedID, nested)
	}
	if !ignored(logs) {
		t.Errorf("message %s (host %s about this instance) was not ignored as from another host", asItselfID, other)
	}
	if after := stored(t, in.InstanceID); after.Status.Terminal() {
		t.Fatalf("a forged report ended the instance: %s (%s)", after.Status, after.StatusReason)
	}
	if _, b := status(t, token(customerA), env); b.Status != "running" {
		t.Fatalf("status %s after forged reports, want running", b.Status)
	}
}

// functionLogs returns the logs of every copy of a function.
func functionLogs(t *testing.T, logicalID string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(stack.LogDir(), logicalID+"-*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		b.Write(data)
	}
	return b.String()
}

func logLineHas(logs, id, text string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, id) && strings.Contains(line, text) {
			return true
		}
	}
	return false
}
