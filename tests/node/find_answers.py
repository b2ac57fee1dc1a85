#!/usr/bin/python3
"""tests/node/find_answers.py DIR — the C-FIND answers findscu -X wrote to DIR (rsp*.dcm) as JSON:
[{"charset": (0008,0005) as sent or "", "id": Patient ID, "name": Patient's Name decoded by
pydicom with the answer's character set, "name_hex": its bytes as sent, "desc": Study
Description decoded, "desc_hex": its bytes}], in PatientID order."""
import glob
import json
import os
import sys

import pydicom


def raw(ds, tag):
    e = ds.get_item(tag)   # the raw element: its value bytes as read
    return bytes(e.value).rstrip(b" ") if e is not None and e.value is not None else b""


out = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "rsp*.dcm"))):
    ds = pydicom.dcmread(f, force=True)
    r = pydicom.dcmread(f, force=True)   # never decoded: get_item gives the bytes
    cs = ds.get("SpecificCharacterSet", "")
    cs = "\\".join(cs) if isinstance(cs, pydicom.multival.MultiValue) else cs
    ds.decode()
    out.append({"charset": cs, "id": str(ds.get("PatientID", "")),
                "name": str(ds.get("PatientName", "")), "name_hex": raw(r, 0x00100010).hex(),
                "desc": str(ds.get("StudyDescription", "")), "desc_hex": raw(r, 0x00081030).hex()})
print(json.dumps(sorted(out, key=lambda a: a["id"]), ensure_ascii=False))
