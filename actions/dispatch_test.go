package actions

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	dev := Principal{Kind: PrincipalDevice, ID: "lock1"}
	tests := []struct {
		name     string
		payload  []byte
		wantWord string
		wantArgs []string // nil: no arguments
		wantErr  bool
	}{
		{name: "Empty", payload: nil, wantErr: true},
		{name: "EmptyNotNil", payload: []byte{}, wantErr: true},
		{name: "OnlySpaces", payload: []byte("     "), wantErr: true},
		{name: "OneSpace", payload: []byte(" "), wantErr: true},
		{name: "LeadingSpace", payload: []byte(" lock"), wantErr: true},
		{name: "UppercaseWord", payload: []byte("LOCK lock1"), wantErr: true},
		{name: "MixedCaseWord", payload: []byte("Hand_shake lock"), wantErr: true},
		{name: "WordOf32", payload: []byte(strings.Repeat("a", 32)), wantWord: strings.Repeat("a", 32)},
		{name: "WordOf33", payload: []byte(strings.Repeat("a", 33)), wantErr: true},
		{name: "WordOf33ThenArgs", payload: []byte(strings.Repeat("a", 33) + " x"), wantErr: true},
		{name: "BinaryJunk", payload: []byte{0x00, 0xff, 0x89, 'P', 'N', 'G'}, wantErr: true},
		{name: "NULInWord", payload: []byte("lo\x00ck"), wantErr: true},
		{name: "TabAfterWord", payload: []byte("lock\tlock1"), wantErr: true},
		{name: "NewlineAfterWord", payload: []byte("state\nlocked"), wantErr: true},
		{name: "DashInWord", payload: []byte("hand-shake lock"), wantErr: true},
		{name: "UTF8Word", payload: []byte("lôck"), wantErr: true},
		{name: "InvalidUTF8AfterWord", payload: []byte("state \xff\xfe"), wantErr: true},
		{name: "TruncatedRuneAfterWord", payload: []byte("hand_shake lock fw \xc3"), wantErr: true},
		{name: "TextOver4096", payload: []byte("state " + strings.Repeat("a", maxTextLen)), wantErr: true},
		{name: "TextOf4096", payload: []byte("state" + " " + strings.Repeat("a", maxTextLen-1)),
			wantWord: "state", wantArgs: []string{strings.Repeat("a", maxTextLen-1)}},
		{name: "WordAlone", payload: []byte("hand_shake"), wantWord: "hand_shake"},
		{name: "WordAndTrailingSpace", payload: []byte("lock "), wantWord: "lock"},
		{name: "Args", payload: []byte("ack c1 ok locked"), wantWord: "ack", wantArgs: []string{"c1", "ok", "locked"}},
		{name: "MultipleSpacesBetweenArgs", payload: []byte("ack   c1  ok     locked   "), wantWord: "ack",
			wantArgs: []string{"c1", "ok", "locked"}},
		{name: "DigitsAndUnderscore", payload: []byte("lock_response 0 d a"), wantWord: "lock_response",
			wantArgs: []string{"0", "d", "a"}},
		{name: "UTF8Args", payload: []byte("hand_shake lock 1.0 Porte d'entrée"), wantWord: "hand_shake",
			wantArgs: []string{"lock", "1.0", "Porte", "d'entrée"}},
		// A picture follows find_stranger: its bytes are neither text nor
		// limited to 4096, and are never split into Args.
		{name: "FindStrangerBinary", payload: append([]byte("find_stranger "), 0xff, 0xd8, 0xff, 0x00, ' ', 0xfe),
			wantWord: "find_stranger"},
		{name: "FindStrangerLarge", payload: append([]byte("find_stranger 1700000000 "), bytes.Repeat([]byte{0x89}, 100<<10)...),
			wantWord: "find_stranger"},
		{name: "FindStrangerAlone", payload: []byte("find_stranger"), wantWord: "find_stranger"},
		{name: "FindStrangerGlued", payload: []byte("find_stranger\xff\xd8"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parse(dev, ViaMQTT, tt.payload)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parse(%q) = %q %q, want an error", trim(tt.payload), m.Word, m.Args)
				}
				if code := ErrorCode(err); code != EInvalid {
					t.Errorf("parse(%q) error code = %q, want %q", trim(tt.payload), code, EInvalid)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", trim(tt.payload), err)
			}
			if m.Word != tt.wantWord {
				t.Errorf("Word = %q, want %q", m.Word, tt.wantWord)
			}
			if !slices.Equal(m.Args, tt.wantArgs) || (tt.wantArgs == nil && len(m.Args) != 0) {
				t.Errorf("Args = %q, want %q", m.Args, tt.wantArgs)
			}
			if m.Sender != dev || m.Via != ViaMQTT || !bytes.Equal(m.Payload, tt.payload) {
				t.Errorf("Sender, Via, Payload = %v, %q, %q; want %v, %q, the payload", m.Sender, m.Via, trim(m.Payload), dev, ViaMQTT)
			}
		})
	}
}

// trim shortens a payload for a failure message.
func trim(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"lock1", true},
		{"Front-Door_2.a", true},
		{"a", true},
		{strings.Repeat("x", 64), true},
		{"ALL", true}, // reserved words are exact, ids are case-sensitive
		{"", false},
		{strings.Repeat("x", 65), false},
		{"all", false},
		{"inline", false},
		{"pair", false},
		{"a/b", false},
		{"a+", false},
		{"#", false},
		{"$SYS", false},
		{"a b", false},
		{"a\x00", false},
		{"porte-entrée", false},
		{"a\tb", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestValidState(t *testing.T) {
	tests := []struct {
		kind, state string
		want        bool
	}{
		{KindLock, "locked", true},
		{KindLock, "unlocked", true},
		{KindLock, "locking", true},
		{KindLock, "unlocking", true},
		{KindLock, "jammed", true},
		{KindLock, "open", true},
		{KindLock, "unknown", true},
		{KindLock, "on", false},
		{KindLock, "Locked", false},
		{KindLock, "", false},
		{KindLock, "expired", false},
		{KindLight, "on", true},
		{KindLight, "off", true},
		{KindLight, "unknown", true},
		{KindLight, "locked", false},
		{KindCamera, "on", true},
		{KindCamera, "off", true},
		{KindCamera, "unknown", true},
		{KindCamera, "open", false},
		{"door", "locked", false},
		{"", "unknown", false},
	}
	for _, tt := range tests {
		if got := ValidState(tt.kind, tt.state); got != tt.want {
			t.Errorf("ValidState(%q, %q) = %v, want %v", tt.kind, tt.state, got, tt.want)
		}
	}
}

func TestValidKind(t *testing.T) {
	tests := []struct {
		kind string
		want bool
	}{
		{"lock", true},
		{"light", true},
		{"camera", true},
		{"Lock", false},
		{"door", false},
		{"", false},
		{"lock ", false},
	}
	for _, tt := range tests {
		if got := ValidKind(tt.kind); got != tt.want {
			t.Errorf("ValidKind(%q) = %v, want %v", tt.kind, got, tt.want)
		}
	}
}

func TestMayReach(t *testing.T) {
	dev := Principal{Kind: PrincipalDevice, ID: "lock1"}
	user := Principal{Kind: PrincipalUser, ID: "bob", Role: RoleMember}
	admin := Principal{Kind: PrincipalUser, ID: "admin", Role: RoleAdmin}
	tests := []struct {
		name   string
		sender Principal
		topic  string
		want   bool
	}{
		{"DeviceOwnTopic", dev, "todevice/lock1", true},
		{"DeviceOtherDevice", dev, "todevice/lock2", false},
		{"DevicePrefixOfOther", dev, "todevice/lock10", false},
		{"DeviceSubtopic", dev, "todevice/lock1/x", false},
		{"DeviceAppTopicSameName", dev, "toapp/lock1", false},
		{"DeviceAdminApp", dev, "toapp/admin", false},
		{"DeviceToServer", dev, "toserver", false},
		{"DeviceScripts", dev, "scripts/x", true},
		{"DeviceScriptsRoot", dev, "scripts/", false},
		{"DeviceScriptsBare", dev, "scripts", false},
		{"DeviceEmpty", dev, "", false},
		{"UserOwnTopic", user, "toapp/bob", true},
		{"UserOtherUser", user, "toapp/admin", false},
		{"UserDeviceTopicSameName", user, "todevice/bob", false},
		{"UserAnyDevice", user, "todevice/lock1", false},
		{"UserWildcard", user, "toapp/#", false},
		{"UserScripts", user, "scripts/a/b", true},
		{"AdminOtherUser", admin, "toapp/bob", false},
		{"AdminDevice", admin, "todevice/lock1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mayReach(tt.sender, tt.topic); got != tt.want {
				t.Errorf("mayReach(%v, %q) = %v, want %v", tt.sender, tt.topic, got, tt.want)
			}
		})
	}
}

func TestVerbState(t *testing.T) {
	tests := []struct {
		kind, verb string
		want       string
		wantOK     bool
	}{
		{KindLock, "lock", "locked", true},
		{KindLock, "unlock", "unlocked", true},
		{KindLock, "on", "", false},
		{KindLock, "off", "", false},
		{KindLock, "", "", false},
		{KindLight, "on", "on", true},
		{KindLight, "off", "off", true},
		{KindLight, "lock", "", false},
		{KindLight, "unlock", "", false},
		{KindCamera, "on", "", false},
		{KindCamera, "lock", "", false},
		{"", "lock", "", false},
		{"door", "lock", "", false},
	}
	for _, tt := range tests {
		got, ok := verbState(tt.kind, tt.verb)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("verbState(%q, %q) = %q, %v; want %q, %v", tt.kind, tt.verb, got, ok, tt.want, tt.wantOK)
		}
	}
	// Every state a verb leads to is a state its kind may report.
	for kind, verbs := range kindVerbs {
		for verb, st := range verbs {
			if !ValidState(kind, st) {
				t.Errorf("verbState(%q, %q) = %q, not a valid state of a %s", kind, verb, st, kind)
			}
		}
	}
}

func TestDesiredAfter(t *testing.T) {
	tests := []struct {
		verb, want string
	}{
		{"lock", "locked"},
		{"unlock", ""},
		{"on", "on"},
		{"off", "off"},
		{"", ""},
		{"unlocked", ""},
		{"open", ""},
		{"LOCK", ""},
	}
	for _, tt := range tests {
		if got := desiredAfter(tt.verb); got != tt.want {
			t.Errorf("desiredAfter(%q) = %q, want %q", tt.verb, got, tt.want)
		}
	}
	// No verb, and no state either, ever makes "unlocked" the desired
	// state: a reconnecting door must never open by itself (Device.Desired).
	words := []string{"unlock", "unlocked", "unlocking", "open", "lock", "locked"}
	for _, verbs := range kindVerbs {
		for verb := range verbs {
			words = append(words, verb)
		}
	}
	for _, states := range kindStates {
		words = append(words, states...)
	}
	for _, w := range words {
		if got := desiredAfter(w); got == "unlocked" || got == "open" || got == "unlocking" {
			t.Errorf("desiredAfter(%q) = %q: a lock must never be told to open by itself", w, got)
		}
	}
}

// FuzzParse checks that parse never panics and that what it accepts obeys
// the payload rules.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", " ", "lock", "ack c ok locked", "find_stranger \xff\xd8", "state \xff", strings.Repeat("a", 33)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := parse(Principal{Kind: PrincipalUser, ID: "u"}, ViaMQTT, payload)
		if err != nil {
			if ErrorCode(err) != EInvalid {
				t.Fatalf("parse error code = %q, want %q", ErrorCode(err), EInvalid)
			}
			return
		}
		if m.Word == "" || len(m.Word) > maxWordLen || !bytes.HasPrefix(payload, []byte(m.Word)) {
			t.Fatalf("Word = %q from %q", m.Word, trim(payload))
		}
		for _, a := range m.Args {
			if a == "" || strings.ContainsAny(a, " \t\n") {
				t.Fatalf("Args contain %q", a)
			}
		}
		if m.Word == "find_stranger" && len(m.Args) != 0 {
			t.Fatalf("find_stranger got Args %q", m.Args)
		}
	})
}
