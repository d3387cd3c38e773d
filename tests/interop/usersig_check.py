"""UserSig interoperability with the official `tls-sig-api-v2` package.

  gen SDKAPPID KEY IDENTIFIER EXPIRE   print a sig made by the official library
  check SDKAPPID KEY IDENTIFIER SIG    decode a sig made by bansync and check
                                       its HMAC with the library's own code
"""
import base64
import json
import sys
import zlib

import TLSSigAPIv2


def decode(sig: str) -> dict:
    raw = sig.replace("*", "+").replace("-", "/").replace("_", "=")
    return json.loads(zlib.decompress(base64.b64decode(raw)))


def main() -> int:
    mode, sdkappid, key, identifier, last = sys.argv[1:6]
    api = TLSSigAPIv2.TLSSigAPIv2(int(sdkappid), key)
    if mode == "gen":
        print(api.gen_sig(identifier, int(last)))
        return 0
    fields = decode(last)
    userbuf = fields.get("TLS.userbuf")
    expected = api._TLSSigAPIv2__hmacsha256(fields["TLS.identifier"], fields["TLS.time"], fields["TLS.expire"], userbuf)
    problems = []
    if fields["TLS.ver"] != "2.0":
        problems.append("TLS.ver is not 2.0")
    if fields["TLS.sdkappid"] != int(sdkappid):
        problems.append("TLS.sdkappid differs")
    if fields["TLS.identifier"] != identifier:
        problems.append("TLS.identifier differs")
    if isinstance(expected, bytes):
        expected = expected.decode()
    if fields["TLS.sig"] != expected:
        problems.append(f"TLS.sig {fields['TLS.sig']} != official {expected}")
    if problems:
        print("; ".join(problems))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
