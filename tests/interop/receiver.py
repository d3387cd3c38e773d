"""A webhook receiver that verifies every delivery with the official
`standardwebhooks` package and records the verdict, one line each:
`ok <webhook-id>` or `REJECTED <webhook-id> <reason>`.

  receiver.py PORT_FILE LOG_FILE SECRET
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

port_file, log_file, secret = sys.argv[1:4]
hook = Webhook(secret)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        msg_id = headers.get("webhook-id", "?")
        try:
            hook.verify(body, headers)
            verdict = f"ok {msg_id}"
            status = 204
        except Exception as e:  # any rejection fails the test
            verdict = f"REJECTED {msg_id} {type(e).__name__}: {e}"
            status = 400
        with open(log_file, "a") as f:
            f.write(verdict + "\n")
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
