// Go peer of bench/run_tls_bench.sh: a TLS echo server with crypto/tls, one goroutine per
// connection, the way Go's documentation writes it (io.Copy from the tls.Conn to itself would
// do the same; the explicit loop reads up to 64 KiB as the other servers do).
//
//	go run tls_echo_server_go.go PORT CERT KEY
//
// Listens on 127.0.0.1:PORT (0: any free port), prints "serving on 127.0.0.1:PORT", echoes until
// the peer closes. GOMAXPROCS is left to the runtime: the runner pins the process to one core with
// taskset, which the runtime sees (it sets GOMAXPROCS from the affinity mask). tls.Config defaults
// (TLS 1.2 minimum; the load generator asks for 1.3). Go's net package sets TCP_NODELAY itself.
// Standard library only: builds offline.
package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
)

func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: tls_echo_server_go PORT CERT KEY")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil || port < 0 || port > 65535 {
		fmt.Fprintln(os.Stderr, "bad port")
		os.Exit(2)
	}
	cert, err := tls.LoadX509KeyPair(os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		&tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("serving on 127.0.0.1:%d\n", ln.Addr().(*net.TCPAddr).Port)
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go echo(c)
	}
}
