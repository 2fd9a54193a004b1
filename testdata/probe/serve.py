# A pod's servers for the lab and the packet tests: TCP accepts and closes, UDP echoes.
# Usage: serve.py TCP_PORTS UDP_PORTS [ADDRESS] (ports comma-separated; ADDRESS defaults to all,
# give it on a host with several addresses so UDP answers come from the address asked);
# prints 'ready' once listening.
import selectors, socket, sys
sel = selectors.DefaultSelector()
for kind, ports in (('tcp', sys.argv[1]), ('udp', sys.argv[2])):
    for p in filter(None, ports.split(',')):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == 'tcp' else socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((sys.argv[3] if len(sys.argv) > 3 else '0.0.0.0', int(p)))
        if kind == 'tcp':
            s.listen(128)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, kind)
print('ready', flush=True)
while True:
    for key, _ in sel.select():
        try:
            if key.data == 'tcp':
                key.fileobj.accept()[0].close()
            else:
                data, peer = key.fileobj.recvfrom(512)
                key.fileobj.sendto(data, peer)
        except OSError:
            pass
