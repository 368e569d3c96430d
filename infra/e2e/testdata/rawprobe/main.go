// Command rawprobe sends hand-made TCP SYN frames from a network interface,
// as a customer with NET_RAW in their container can: to 127.0.0.1, through
// the host's bridge (CVE-2020-8558). The end-to-end tests build it, copy it
// into a customer's container, and count on the host what arrives.
//
//	rawprobe <interface> <next-hop MAC> <destination IPv4> <port>...
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rawprobe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 4 {
		return fmt.Errorf("usage: rawprobe <interface> <next-hop MAC> <destination IPv4> <port>...")
	}
	iface, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	hop, err := net.ParseMAC(args[1])
	if err != nil {
		return err
	}
	dst := net.ParseIP(args[2]).To4()
	if dst == nil {
		return fmt.Errorf("%q is not an IPv4 address", args[2])
	}
	src, err := ipv4Of(iface)
	if err != nil {
		return err
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_IP)))
	if err != nil {
		return fmt.Errorf("opening a packet socket (needs NET_RAW): %w", err)
	}
	defer syscall.Close(fd)
	addr := &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: iface.Index, Halen: 6}
	copy(addr.Addr[:], hop)
	for _, p := range args[3:] {
		port, err := strconv.Atoi(p)
		if err != nil || port <= 0 || port > 65535 {
			return fmt.Errorf("%q is not a port", p)
		}
		frame := synFrame(iface.HardwareAddr, hop, src, dst, uint16(port))
		for range 3 {
			if err := syscall.Sendto(fd, frame, 0, addr); err != nil {
				return fmt.Errorf("sending to %s:%d: %w", dst, port, err)
			}
		}
	}
	return nil
}

func ipv4Of(iface *net.Interface) (net.IP, error) {
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("%s has no IPv4 address", iface.Name)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// synFrame is an Ethernet frame carrying an IPv4 TCP SYN.
func synFrame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, port uint16) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000+port%20000) // source port
	binary.BigEndian.PutUint16(tcp[2:], port)
	binary.BigEndian.PutUint32(tcp[4:], 0x5eed0001) // sequence number
	tcp[12] = 5 << 4                                // header length: 5 words
	tcp[13] = 0x02                                  // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)     // window
	pseudo := append(append(append([]byte{}, src...), dst...), 0, syscall.IPPROTO_TCP, 0, byte(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))

	ip := make([]byte, 20)
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(tcp)))
	binary.BigEndian.PutUint16(ip[4:], 0x5eed)
	ip[8] = 64 // TTL
	ip[9] = syscall.IPPROTO_TCP
	copy(ip[12:], src)
	copy(ip[16:], dst)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))

	eth := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	return append(append(eth, ip...), tcp...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
