package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with serial and
// returns a pool that trusts it.
func writeCert(t *testing.T, dir string, serial int64) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "gatehouse test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func TestTLS(t *testing.T) {
	certDir := t.TempDir()
	pool := writeCert(t, certDir, 1)
	s := startServerWith(t, "", func(c *config) {
		c.TLSCert, c.TLSKey = filepath.Join(certDir, "cert.pem"), filepath.Join(certDir, "key.pem")
		c.MQTTS = "127.0.0.1:0"
	})
	mqtts := s.app.broker.TLSAddr()
	https := "https://" + s.app.httpLn.Addr().String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	secret := ""

	t.Run("HTTPS", func(t *testing.T) {
		req, _ := http.NewRequest("POST", https+"/api/v1/devices", stringsReader(`{"id":"door","kind":"lock"}`))
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("https: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create over https: %d %s", resp.StatusCode, body)
		}
		secret = jsonField(t, body, "secret")
		if err := healthcheck(s.app.httpLn.Addr().String(), true); err != nil {
			t.Errorf("healthcheck over https: %v", err)
		}
		// Plain HTTP to the HTTPS port gets no API.
		if resp, err := http.Get("http://" + s.app.httpLn.Addr().String() + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Error("plain HTTP answered on the HTTPS port")
			}
		}
	})
	t.Run("MQTTS", func(t *testing.T) {
		msgs := make(chan string, 4)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + mqtts).SetClientID("door").
			SetUsername("door").SetPassword(secret).SetAutoReconnect(false).SetProtocolVersion(4).
			SetTLSConfig(&tls.Config{RootCAs: pool}).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { msgs <- string(m.Payload()) }))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("mqtts connect: %v", tok.Error())
		}
		defer c.Disconnect(0)
		c.Subscribe("todevice/door", 1, nil).WaitTimeout(5 * time.Second)
		c.Publish("toserver", 1, false, "hand_shake lock").WaitTimeout(5 * time.Second)
		select {
		case m := <-msgs:
			if m[:8] != "welcome " {
				t.Errorf("got %q", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no welcome over TLS")
		}
	})
	t.Run("PlainToTLSPort", func(t *testing.T) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqtts).SetClientID("door").
			SetUsername("door").SetPassword(secret).SetAutoReconnect(false).SetProtocolVersion(4).
			SetConnectTimeout(3 * time.Second))
		if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			c.Disconnect(0)
			t.Fatal("plain MQTT connected to the TLS port")
		}
		// The server is still fine.
		if resp, err := client.Get(https + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("healthz after a plain-text attempt: %v", err)
		}
	})
	t.Run("Reload", func(t *testing.T) {
		pool2 := writeCert(t, certDir, 2)
		if err := s.app.certs.load(); err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", mqtts, &tls.Config{RootCAs: pool2})
		if err != nil {
			t.Fatalf("dial with the new certificate: %v", err)
		}
		defer conn.Close()
		if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 2 {
			t.Errorf("serial after reload %d, want 2", got)
		}
	})
}
