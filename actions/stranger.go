package actions

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"image"
	_ "image/gif" // DecodeConfig checks the headers of the types we take
	_ "image/jpeg"
	_ "image/png"
	"strconv"
	"strings"
	"time"
)

// Stranger is a picture a door camera took of someone, stored with its
// stranger event; its id is the event's id.
type Stranger struct {
	ID     string    `json:"id"`
	Device string    `json:"device"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Size   int       `json:"size"`
	// URL is a signed path on this server that serves the picture without
	// a bearer token until it expires.
	URL string `json:"url"`
}

// StrangerQuery selects pictures, newest first.
type StrangerQuery struct {
	Limit  int
	Cursor string
	Filter func(Stranger) bool
}

// Picture limits and defaults.
const (
	MaxMQTTPicture       = 256 << 10
	DefaultMaxPicture    = 5 << 20
	DefaultKeepPictures  = 1000
	DefaultPictureBytes  = 256 << 20
	DefaultLinkTTL       = 15 * time.Minute
	settingLinkKey       = "link_key"
	minimumPictureLength = 32
	// MaxPicturePixels bounds a picture's declared dimensions: a few KiB
	// can announce a picture that would take gigabytes to decode in an
	// app or a browser.
	MaxPicturePixels = 40_000_000
)

// pictureTypes are the types a picture may have.
var pictureTypes = []string{"image/jpeg", "image/png", "image/gif", "image/webp"}

// PictureType reports whether a Content-Type names one of the picture
// types the server takes.
func PictureType(ct string) bool {
	for _, t := range pictureTypes {
		if strings.EqualFold(ct, t) {
			return true
		}
	}
	return false
}

// SniffPicture returns the type of a picture from its bytes, or why it is
// refused: not a complete JPEG, PNG, GIF or WebP image, or larger than
// MaxPicturePixels.
func SniffPicture(b []byte) (string, error) { return sniff(b) }

// checkPixels refuses dimensions that are zero or absurd.
func checkPixels(what string, w, h int) error {
	if w <= 0 || h <= 0 {
		return Errorf(EInvalid, "picture is not a complete %s: it has no pixels", what)
	}
	if int64(w)*int64(h) > MaxPicturePixels {
		return Errorf(EInvalid, "picture is %d×%d pixels: at most %d megapixels", w, h, MaxPicturePixels/1_000_000)
	}
	return nil
}

// decodeConfig reads the dimensions of a JPEG, PNG or GIF and checks them.
func decodeConfig(b []byte, what string) error {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return Errorf(EInvalid, "picture is not a complete %s", what)
	}
	return checkPixels(what, cfg.Width, cfg.Height)
}

// webpSize reads the canvas size of a WebP from its first chunk: VP8X
// (extended), VP8L (lossless) or VP8 (lossy).
func webpSize(b []byte) (w, h int, ok bool) {
	if len(b) < 30 {
		return 0, 0, false
	}
	le24 := func(p []byte) int { return int(p[0]) | int(p[1])<<8 | int(p[2])<<16 }
	switch string(b[12:16]) {
	case "VP8X":
		return le24(b[24:27]) + 1, le24(b[27:30]) + 1, true
	case "VP8L":
		if b[20] != 0x2f {
			return 0, 0, false
		}
		bits := binary.LittleEndian.Uint32(b[21:25])
		return int(bits&0x3fff) + 1, int(bits>>14&0x3fff) + 1, true
	case "VP8 ":
		if b[23] != 0x9d || b[24] != 0x01 || b[25] != 0x2a {
			return 0, 0, false
		}
		return int(binary.LittleEndian.Uint16(b[26:28]) & 0x3fff), int(binary.LittleEndian.Uint16(b[28:30]) & 0x3fff), true
	}
	return 0, 0, false
}

// sniff returns the MIME type of a complete JPEG, PNG, GIF or WebP image,
// or an error: the type comes from the bytes, never from the client, and a
// truncated file is refused, and so is one whose header announces more
// than MaxPicturePixels.
func sniff(b []byte) (string, error) {
	bad := func(what string) (string, error) {
		return "", Errorf(EInvalid, "picture is not a complete %s", what)
	}
	if len(b) < minimumPictureLength {
		return "", Errorf(EInvalid, "picture too short to be an image")
	}
	switch {
	case bytes.HasPrefix(b, []byte{0xFF, 0xD8, 0xFF}):
		end := bytes.TrimRight(b, "\x00")
		if !bytes.HasSuffix(end, []byte{0xFF, 0xD9}) {
			return bad("JPEG")
		}
		if err := decodeConfig(b, "JPEG"); err != nil {
			return "", err
		}
		return "image/jpeg", nil
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		if !bytes.HasSuffix(b, []byte{0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82}) {
			return bad("PNG")
		}
		if err := decodeConfig(b, "PNG"); err != nil {
			return "", err
		}
		return "image/png", nil
	case bytes.HasPrefix(b, []byte("GIF87a")) || bytes.HasPrefix(b, []byte("GIF89a")):
		if b[len(b)-1] != 0x3B {
			return bad("GIF")
		}
		if err := decodeConfig(b, "GIF"); err != nil {
			return "", err
		}
		return "image/gif", nil
	case bytes.HasPrefix(b, []byte("RIFF")) && string(b[8:12]) == "WEBP":
		if int(binary.LittleEndian.Uint32(b[4:8]))+8 != len(b) {
			return bad("WebP")
		}
		w, h, ok := webpSize(b)
		if !ok {
			return bad("WebP")
		}
		if err := checkPixels("WebP", w, h); err != nil {
			return "", err
		}
		return "image/webp", nil
	}
	return "", Errorf(EInvalid, "picture must be a JPEG, PNG, GIF or WebP image")
}

// linkKey returns the signing key of picture links, made on first use and
// kept in the store so links survive a restart.
func (s *Service) linkKey() ([]byte, error) {
	s.mu.Lock()
	key := s.signKey
	s.mu.Unlock()
	if key != nil {
		return key, nil
	}
	err := s.update(func(tx Tx) error {
		k, err := tx.Setting(settingLinkKey)
		if ErrorCode(err) == ENotFound {
			k = []byte(NewSecret())
			err = tx.PutSetting(settingLinkKey, k)
		}
		key = k
		return err
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.signKey = key
	s.mu.Unlock()
	return key, nil
}

func sign(key []byte, id string, exp int64) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "picture|%s|%d", id, exp)
	return hex.EncodeToString(m.Sum(nil))
}

// pictureURL is the signed link to picture id, valid for the link TTL.
func (s *Service) pictureURL(id string) (string, error) {
	key, err := s.linkKey()
	if err != nil {
		return "", err
	}
	exp := s.now().Add(s.linkTTL).Unix()
	return fmt.Sprintf("/api/v1/strangers/%s/picture?exp=%d&sig=%s", id, exp, sign(key, id, exp)), nil
}

// CheckLink reports whether exp and sig are a valid, unexpired signature
// for picture id.
func (s *Service) CheckLink(id, exp, sig string) error {
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || sig == "" {
		return Errorf(EUnauthorized, "invalid picture link")
	}
	key, err := s.linkKey()
	if err != nil {
		return err
	}
	if !hmac.Equal([]byte(sign(key, id, n)), []byte(strings.ToLower(sig))) {
		return Errorf(EUnauthorized, "invalid picture link")
	}
	if s.now().Unix() >= n {
		return Errorf(EUnauthorized, "picture link expired")
	}
	return nil
}

// AddStranger stores a picture from camera p, with its event, in one
// transaction, applies the retention policy, and tells every person who may
// see the camera where to fetch it.
func (s *Service) AddStranger(p Principal, at time.Time, data []byte, via string) (Stranger, error) {
	if p.Kind != PrincipalDevice {
		return Stranger{}, Errorf(EForbidden, "only cameras send pictures")
	}
	typ, err := sniff(data)
	if err != nil {
		return Stranger{}, err
	}
	now := s.now()
	if at.IsZero() || at.After(now.Add(time.Minute)) || at.Before(now.Add(-24*time.Hour)) {
		at = now // a camera's clock is not trusted beyond a day's drift
	}
	var st Stranger
	var dropped []string
	err = s.update(func(tx Tx) error {
		dropped = nil
		d, err := tx.Device(p.ID)
		if err != nil {
			return err
		}
		if d.Kind != KindCamera {
			return Errorf(EForbidden, "only cameras send pictures; %q is a %s", d.ID, d.Kind)
		}
		// The event is dated on arrival, so the log (and streams resuming
		// from it) stays in arrival order; the camera's time is the picture's.
		e := Event{Time: now, Type: EventStranger, Device: d.ID, Via: via, Detail: fmt.Sprintf("picture %s, %d bytes", typ, len(data))}
		if err := tx.AppendEvent(&e); err != nil {
			return err
		}
		st = Stranger{ID: e.ID, Device: d.ID, Time: at, Type: typ, Size: len(data)}
		if err := tx.PutPicture(st, data); err != nil {
			return err
		}
		dropped, err = s.retain(tx, now)
		return err
	})
	if err != nil {
		return Stranger{}, err
	}
	if len(dropped) > 0 {
		s.log.Info("pictures dropped by retention", "count", len(dropped))
	}
	if st.URL, err = s.pictureURL(st.ID); err != nil {
		return Stranger{}, err
	}
	s.notifyDevice(p.ID, fmt.Sprintf("find_stranger %s %s %s", p.ID, st.ID, st.URL))
	return st, nil
}

// retain deletes the oldest pictures past the count and size quotas, each
// deletion an event.
func (s *Service) retain(tx Tx, now time.Time) ([]string, error) {
	all, err := tx.AllStrangers()
	if err != nil {
		return nil, err
	}
	total := 0
	for _, st := range all {
		total += st.Size
	}
	var dropped []string
	for i := 0; i < len(all) && (len(all)-i > s.keepPictures || total > s.pictureBytes); i++ {
		st := all[i]
		if err := tx.DeletePicture(st.ID); err != nil {
			return nil, err
		}
		total -= st.Size
		dropped = append(dropped, st.ID)
		if err := tx.AppendEvent(&Event{Time: now, Type: EventStranger, Device: st.Device, Via: ViaServer,
			Detail: "picture " + st.ID + " deleted by retention"}); err != nil {
			return nil, err
		}
	}
	return dropped, nil
}

// findStranger: `find_stranger [unix-time] <picture bytes>` from a camera.
func (s *Service) findStranger(m Message) (string, error) {
	if m.Sender.Kind != PrincipalDevice {
		return "", Errorf(EForbidden, "find_stranger is for cameras")
	}
	rest, ok := bytes.CutPrefix(m.Payload, []byte("find_stranger "))
	if !ok || len(rest) == 0 {
		return "", Errorf(EInvalid, "usage: find_stranger [unix-time] <picture bytes>")
	}
	var at time.Time
	if i := bytes.IndexByte(rest, ' '); i > 0 && i <= 12 {
		if n, err := strconv.ParseInt(string(rest[:i]), 10, 64); err == nil {
			at, rest = time.Unix(n, 0), rest[i+1:]
		}
	}
	if len(rest) > MaxMQTTPicture {
		return "", Errorf(EInvalid, "picture over MQTT is limited to %d KiB; use POST /api/v1/strangers", MaxMQTTPicture>>10)
	}
	st, err := s.AddStranger(m.Sender, at, rest, m.Via)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s stranger_saved %s", DeviceTopic(m.Sender.ID), st.ID), nil
}

// Strangers lists the pictures p may see, newest first, with fresh links.
func (s *Service) Strangers(p Principal, q StrangerQuery) ([]Stranger, string, error) {
	var (
		out  []Stranger
		next string
	)
	err := s.store.View(func(tx Tx) error {
		filter, err := s.readFilter(tx, p)
		if err != nil {
			return err
		}
		if filter != nil {
			q.Filter = func(st Stranger) bool { return filter(Event{Device: st.Device, Time: st.Time}) }
		}
		out, next, err = tx.Strangers(q)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	for i := range out {
		if out[i].URL, err = s.pictureURL(out[i].ID); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// Picture returns a picture for p (who must be allowed to read its camera
// at the time it was taken), or, with p zero, for a caller holding a valid
// signed link checked by CheckLink.
func (s *Service) Picture(p *Principal, id string) (Stranger, []byte, error) {
	var (
		st   Stranger
		data []byte
	)
	err := s.store.View(func(tx Tx) (err error) {
		if st, err = tx.Stranger(id); err != nil {
			return Errorf(ENotFound, "picture %q not found", clip(id))
		}
		if p != nil {
			filter, err := s.readFilter(tx, *p)
			if err != nil {
				return err
			}
			if filter != nil && !filter(Event{Device: st.Device, Time: st.Time}) {
				return Errorf(ENotFound, "picture %q not found", clip(id))
			}
		}
		data, err = tx.Picture(id)
		return err
	})
	return st, data, err
}

// LatestPicture is the prototype's /get_pic: the newest picture p may see.
func (s *Service) LatestPicture(p Principal) (Stranger, []byte, error) {
	list, _, err := s.Strangers(p, StrangerQuery{Limit: 1})
	if err != nil {
		return Stranger{}, nil, err
	}
	if len(list) == 0 {
		return Stranger{}, nil, Errorf(ENotFound, "no picture yet")
	}
	return s.Picture(&p, list[0].ID)
}
