package bench

import (
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// pingScript answers the app that sent the word on its own topic.
const pingScript = `def action(msg, server):
    return "toapp/" + msg.sender.id + " pong"
`

// roundTrips has the admin's app publish payload b.N times and wait each
// time for an answer starting with want on toapp/admin.
func roundTrips(b *testing.B, s *server, payload, want string) {
	got := make(chan string, 16)
	app := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + s.mqtt).SetClientID("phone").
		SetUsername("admin").SetPassword(token).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }))
	if tok := app.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer app.Disconnect(0)
	app.Subscribe("toapp/admin", 1, nil).WaitTimeout(5 * time.Second)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		app.Publish("toserver", 1, false, payload)
		select {
		case m := <-got:
			if !strings.HasPrefix(m, want) {
				b.Fatalf("got %q, want %q…", m, want)
			}
		case <-time.After(5 * time.Second):
			b.Fatal("timeout")
		}
	}
}

// BenchmarkScriptRoundTripMQTT is an app running a trivial script over
// MQTT: payload → script run in the sandbox → reply on toapp/admin.
func BenchmarkScriptRoundTripMQTT(b *testing.B) {
	b.Setenv("GATEHOUSE_SCRIPTS", "true")
	s := startServer(b, "30s")
	s.do(b, "PUT", "/api/v1/actions/ping", pingScript)
	roundTrips(b, s, "ping", "pong")
}

// BenchmarkUnknownWordRoundTripMQTT is the same trip through a built-in
// path that touches no disk (an unknown word's error), for comparison.
func BenchmarkUnknownWordRoundTripMQTT(b *testing.B) {
	s := startServer(b, "30s")
	roundTrips(b, s, "nothing", "error unknown action")
}
