# Sends one hand-made Ethernet frame out of an interface: the fabric tests' way to spoof.
# usage: frame.py IFNAME KIND SRC_MAC DST_MAC [fields...]
#   ipv4 SRC_MAC DST_MAC SRC_IP DST_IP UDP_PORT   an IPv4/UDP datagram
#   arp  SRC_MAC DST_MAC SENDER_MAC SENDER_IP TARGET_IP   an ARP request
#   ipv6 SRC_MAC DST_MAC                           an IPv6 header (any other protocol)
import socket, struct, sys

def mac(s):
    return bytes(int(b, 16) for b in s.split(":"))

def ip4(s):
    return socket.inet_aton(s)

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

ifname, kind, src, dst = sys.argv[1:5]
rest = sys.argv[5:]
if kind == "ipv4":
    sip, dip, port = rest[0], rest[1], int(rest[2])
    payload = b"fabric-test"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, ip4(sip), ip4(dip))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    body, ethertype = hdr + udp, 0x0800
elif kind == "arp":
    sha, spa, tpa = rest
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac(sha), ip4(spa), b"\0" * 6, ip4(tpa))
    ethertype = 0x0806
elif kind == "ipv6":
    body, ethertype = struct.pack("!IHBB16s16s", 6 << 28, 0, 59, 64, b"\0" * 15 + b"\1", b"\xff\x02" + b"\0" * 13 + b"\1"), 0x86DD
else:
    sys.exit("unknown kind " + kind)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
s.send(mac(dst) + mac(src) + struct.pack("!H", ethertype) + body)
