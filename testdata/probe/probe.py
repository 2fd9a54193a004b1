# Probes from one source address: reads [[protocol, address, port], ...] on stdin, tries them
# all at once and prints whether each got through. A refused connection got through (policy let
# the packet reach the host), except with `strict`, where only an accepted one does.
# Usage: probe.py SOURCE_ADDRESS [strict]
import json, socket, sys, threading
src = sys.argv[1]
strict = len(sys.argv) > 2 and sys.argv[2] == 'strict'
probes = json.load(sys.stdin)
out = [False] * len(probes)
def probe(i, proto, dst, port):
    try:
        if proto == 'TCP':
            s = socket.socket()
            s.settimeout(1.5)
            s.bind((src, 0))
            s.connect((dst, port))
            out[i] = True
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            s.settimeout(0.5)
            for _ in range(3):
                s.sendto(b'probe', (dst, port))
                try:
                    s.recvfrom(64)
                    out[i] = True
                    return
                except socket.timeout:
                    pass
    except ConnectionRefusedError:
        out[i] = not strict
    except OSError:
        pass
threads = [threading.Thread(target=probe, args=(i, *p)) for i, p in enumerate(probes)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
