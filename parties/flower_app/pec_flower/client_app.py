"""The partner's ClientApp: a thin relay to the partner's own PEC process, nothing else.

This code ships in the brand's app bundle and runs on the partner's SuperNode, so it never reads
the partner's data, keys or database: it forwards each message's bytes over loopback to the
address the partner configured (``--node-config 'partner-url="http://127.0.0.1:PORT"'``) and
returns the answer. Failures become short error codes; exception texts never travel back.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query("pec")
def relay(msg: Message, context: Context) -> Message:
    """Forward the payload to the partner's process and return its answer."""
    try:
        url = str(context.node_config["partner-url"]).rstrip("/")
        job = str(msg.content.config_records["meta"]["job"])
        payload = bytes(msg.content.array_records["data"]["bytes"].data)
        request = urllib.request.Request(
            f"{url}/relay/{job}",
            data=payload,
            method="POST",
            headers={"content-type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        reason = exc.read()[:300].decode("utf-8", "replace")
        error = ConfigRecord({"job": "", "error": f"http {exc.code}: {reason}"})
        return Message(RecordDict({"meta": error}), reply_to=msg)
    except Exception:  # never echo exception texts to the brand
        return Message(RecordDict({"meta": ConfigRecord({"error": "relay failed"})}), reply_to=msg)
    array = Array(dtype="uint8", shape=(len(answer),), stype="raw", data=answer)
    content = RecordDict(
        {"meta": ConfigRecord({"job": job}), "data": ArrayRecord({"bytes": array})}
    )
    return Message(content, reply_to=msg)
