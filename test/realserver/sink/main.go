// Command sink is the real-server suite's SMTP sink (test/realserver): it
// accepts every message and writes it to a directory, NAME.eml with the
// message as received and NAME.env with its envelope (JSON). With -tls it
// offers STARTTLS with a self-signed certificate made at start, as the relay
// transport (smtp_tls_security_level = encrypt) requires. No AUTH. With
// -rcpt-reply it refuses every RCPT with that reply instead ({rcpt} is
// replaced by the recipient): a receiver that blocks our IP, or one that
// knows no such user.
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

var (
	listen  = flag.String("listen", "127.0.0.10:25", "address to listen on")
	dir     = flag.String("dir", "/var/lib/sink", "where received messages are written")
	name    = flag.String("name", "sink", "host name in the greeting")
	useTLS  = flag.Bool("tls", false, "offer STARTTLS (self-signed certificate)")
	rcptRe  = flag.String("rcpt-reply", "", `refuse every RCPT with this reply ("554 5.7.1 ..."; {rcpt} is the recipient)`)
	seq     atomic.Int64
	tlsConf *tls.Config
)

type envelope struct {
	From   string    `json:"from"`
	Rcpt   []string  `json:"rcpt"`
	TLS    bool      `json:"tls"`
	Client string    `json:"client"`
	Helo   string    `json:"helo"`
	Time   time.Time `json:"time"`
}

func selfSigned(host string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	if *useTLS {
		var err error
		if tlsConf, err = selfSigned(*name); err != nil {
			log.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("sink %s on %s, tls=%v, writing to %s, rcpt-reply %q", *name, *listen, *useTLS, *dir, *rcptRe)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Printf("accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}

func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(s string) {
		w.WriteString(s + "\r\n")
		w.Flush()
	}
	env := envelope{Client: c.RemoteAddr().String()}
	reply("220 " + *name + " ESMTP sink")
	for {
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			env.Helo = arg
			ext := []string{*name, "8BITMIME", "SIZE 52428800", "ENHANCEDSTATUSCODES"}
			if tlsConf != nil && !env.TLS {
				ext = append(ext, "STARTTLS")
			}
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				w.WriteString("250" + sep + e + "\r\n")
			}
			w.Flush()
		case "HELO":
			env.Helo = arg
			reply("250 " + *name)
		case "STARTTLS":
			if tlsConf == nil || env.TLS {
				reply("502 5.5.1 not offered")
				continue
			}
			reply("220 2.0.0 go ahead")
			tc := tls.Server(c, tlsConf)
			if err := tc.Handshake(); err != nil {
				log.Printf("%s: TLS handshake: %v", env.Client, err)
				return
			}
			c = tc
			r, w = bufio.NewReader(c), bufio.NewWriter(c)
			env = envelope{Client: env.Client, TLS: true}
		case "MAIL":
			env.From, env.Rcpt = addr(arg), nil
			reply("250 2.1.0 ok")
		case "RCPT":
			if *rcptRe != "" {
				text := strings.ReplaceAll(*rcptRe, "{rcpt}", addr(arg))
				log.Printf("%s: RCPT %s refused: %s", env.Client, addr(arg), text)
				reply(text)
				continue
			}
			env.Rcpt = append(env.Rcpt, addr(arg))
			reply("250 2.1.5 ok")
		case "DATA":
			if len(env.Rcpt) == 0 {
				reply("503 5.5.1 no recipients")
				continue
			}
			reply("354 go ahead")
			var msg bytes.Buffer
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
				l = strings.TrimPrefix(l, ".") // RFC 5321 4.5.2 dot-stuffing
				msg.WriteString(l)
			}
			env.Time = time.Now()
			f, err := store(env, msg.Bytes())
			if err != nil {
				log.Printf("store: %v", err)
				reply("451 4.3.0 cannot store")
				continue
			}
			log.Printf("from=<%s> rcpt=%v tls=%v -> %s", env.From, env.Rcpt, env.TLS, f)
			reply("250 2.0.0 stored " + filepath.Base(f))
			env.From, env.Rcpt = "", nil
		case "RSET":
			env.From, env.Rcpt = "", nil
			reply("250 2.0.0 ok")
		case "NOOP":
			reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			reply("502 5.5.2 unknown command")
		}
	}
}

// addr takes the address out of "FROM:<a@b> SIZE=1" or "TO:<a@b>".
func addr(arg string) string {
	if i := strings.IndexByte(arg, '<'); i >= 0 {
		if j := strings.IndexByte(arg[i:], '>'); j >= 0 {
			return arg[i+1 : i+j]
		}
	}
	_, a, _ := strings.Cut(arg, ":")
	return strings.TrimSpace(a)
}

// store writes the message, then its envelope, each by rename, so a reader
// that sees NAME.env finds the whole NAME.eml.
func store(env envelope, msg []byte) (string, error) {
	base := filepath.Join(*dir, fmt.Sprintf("%d-%06d", time.Now().UnixNano(), seq.Add(1)))
	ej, _ := json.Marshal(env)
	for _, f := range []struct {
		ext  string
		data []byte
	}{{".eml", msg}, {".env", ej}} {
		if err := os.WriteFile(base+f.ext+".tmp", f.data, 0o644); err != nil {
			return "", err
		}
		if err := os.Rename(base+f.ext+".tmp", base+f.ext); err != nil {
			return "", err
		}
	}
	return base + ".eml", nil
}
