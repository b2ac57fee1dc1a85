#!/usr/bin/python3
"""tests/node/gen_dicom.py — makes the DICOM files the node tests send (run with /usr/bin/python3,
which has pydicom and numpy). Not a phantom: small deterministic CT slices with random-looking
pixels, so a byte comparison after storage means something.

  gen_dicom.py series OUTDIR N [--rows R] [--patient NAME] [--study UID] [--series UID]
                               [--modality CT] [--description TEXT] [--seed S]
                               [--study-time TM] [--study-id SH] [--series-number IS]
        N slices of one series, OUTDIR/0001.dcm ... ; prints the series UID
  gen_dicom.py bad OUTDIR
        OUTDIR/no_sop_uid.dcm, bad_sop_uid.dcm, no_series_uid.dcm, bad_series_uid.dcm,
        meta_mismatch.dcm (meta MediaStorageSOPInstanceUID != SOPInstanceUID),
        pdf.dcm (Encapsulated PDF, a SOP class the node does not accept)
  gen_dicom.py charset OUTDIR
        one CT slice per character set, each its own patient, study and series (CHARSET_CASES:
        file, Specific Character Set, Patient's Name as sent, as the node indexes it in UTF-8)
"""
import argparse
import os
import sys
import warnings

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1138."   # test root; uids below it are deterministic per seed


def uid(*parts):
    return ROOT + ".".join(str(p) for p in parts)


def ct_slice(i, n, rows, patient, study, series, modality, desc, rng, sop=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop or (series + "." + str(i + 1))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "0.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC" + study[-6:].replace(".", "")
    ds.Modality = modality
    ds.Manufacturer = "segnode-tests"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "node test study"
    ds.SeriesDescription = desc
    ds.PatientName = patient
    ds.PatientID = "PID-" + patient.replace("^", "-")
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = "2.0"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = study + ".9"
    ds.SliceLocation = 2.0 * i
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = rows
    ds.PixelSpacing = [1.0, 1.0]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    px = rng.integers(-1024, 3000, size=(rows, rows), dtype=np.int16)
    ds.PixelData = px.tobytes()
    return ds


def save(ds, path):
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    # pydicom 2.x: write the meta header exactly as built (write_like_original=False would
    # overwrite MediaStorageSOPInstanceUID from the dataset), after a 128-byte preamble.
    ds.preamble = b"\0" * 128
    ds.file_meta.FileMetaInformationVersion = b"\0\1"
    ds.file_meta.FileMetaInformationGroupLength = 0      # recomputed on write
    ds.save_as(path, write_like_original=True)


def cmd_series(a):
    os.makedirs(a.outdir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    study = a.study or uid(a.seed, 1)
    series = a.series or uid(a.seed, 2)
    for i in range(a.n):
        ds = ct_slice(i, a.n, a.rows, a.patient, study, series, a.modality, a.description, rng)
        for keyword, value in (("StudyTime", a.study_time), ("StudyID", a.study_id),
                               ("SeriesNumber", a.series_number), ("PatientBirthDate", a.birth_date),
                               ("PatientSex", a.sex), ("ReferringPhysicianName", a.referring)):
            if value is not None:
                setattr(ds, keyword, value)
        save(ds, os.path.join(a.outdir, "%04d.dcm" % (i + 1)))
    print(series)


def cmd_bad(a):
    os.makedirs(a.outdir, exist_ok=True)
    rng = np.random.default_rng(99)
    study, series = uid(99, 1), uid(99, 2)

    def mk(i, **kw):
        return ct_slice(i, 1, 16, "BAD^INPUT", study, series, "CT", "bad", rng, **kw)

    ds = mk(0)
    del ds.SOPInstanceUID                      # the command carries the meta UID; dataset has none
    save(ds, os.path.join(a.outdir, "no_sop_uid.dcm"))

    bad = "1.2.3.abc"                           # not a UID (letters)
    ds = mk(1, sop=bad)
    save(ds, os.path.join(a.outdir, "bad_sop_uid.dcm"))

    ds = mk(2)
    del ds.SeriesInstanceUID
    save(ds, os.path.join(a.outdir, "no_series_uid.dcm"))

    ds = mk(3)
    ds.SeriesInstanceUID = "1.2.03.4"           # leading zero in a component: malformed
    save(ds, os.path.join(a.outdir, "bad_series_uid.dcm"))

    ds = mk(4)
    ds.file_meta.MediaStorageSOPInstanceUID = uid(99, 777)   # differs from the dataset's
    save(ds, os.path.join(a.outdir, "meta_mismatch.dcm"))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = uid(99, 3, 1)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "0.1"
    pdf = Dataset()
    pdf.file_meta = meta
    pdf.SOPClassUID = meta.MediaStorageSOPClassUID
    pdf.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    pdf.StudyInstanceUID = study
    pdf.SeriesInstanceUID = uid(99, 3)
    pdf.Modality = "DOC"
    pdf.PatientName = "BAD^INPUT"
    pdf.PatientID = "PID-BAD"
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    save(pdf, os.path.join(a.outdir, "pdf.dcm"))


# (file, Specific Character Set or None, Patient's Name (str, or bytes sent as they are),
#  Study Description, the name as the node indexes it in UTF-8)
CHARSET_CASES = [
    ("latin1", "ISO_IR 100", "Müller^Jürgen", "Schädel nativ", "Müller^Jürgen"),
    ("greek", "ISO_IR 126", "Διονυσιος", "Θώρακας", "Διονυσιος"),
    ("japanese", "\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "CT",
     "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("utf8", "ISO_IR 192", "Núñez^Sofía", "Tórax", "Núñez^Sofía"),
    # no Specific Character Set, 8-bit bytes: not conformant; read as Latin-1
    ("nocharset", None, b"G\xf3mez^Ana", "plain", "Gómez^Ana"),
    # a Defined Term nobody knows: the file is kept, the index gets '?' for the 8-bit byte
    ("unknown", "ISO_IR 999", b"Ren\xe9^Luc", "plain", "Ren?^Luc"),
]


def cmd_charset(a):
    from pydicom.valuerep import PersonName
    os.makedirs(a.outdir, exist_ok=True)
    rng = np.random.default_rng(7)
    for n, (name, cs, pn, desc, _) in enumerate(CHARSET_CASES):
        study = uid(30, n + 1)
        ds = ct_slice(0, 1, 16, "CHARSET^TEST", study, study + ".1", "CT", "charset " + name, rng)
        if cs is None:
            del ds.SpecificCharacterSet
        else:
            ds.SpecificCharacterSet = cs
        ds.PatientID = "PID-CS-" + name.upper()
        ds.PatientName = PersonName(pn) if isinstance(pn, bytes) else pn
        ds.StudyDescription = desc
        ds.save_as(os.path.join(a.outdir, name + ".dcm"), write_like_original=False)


def main():
    warnings.simplefilter("ignore")      # malformed UIDs are made on purpose
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("series")
    s.add_argument("outdir")
    s.add_argument("n", type=int)
    s.add_argument("--rows", type=int, default=128)
    s.add_argument("--patient", default="NODE^TEST")
    s.add_argument("--study")
    s.add_argument("--series")
    s.add_argument("--modality", default="CT")
    s.add_argument("--description", default="node test series")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--study-time")
    s.add_argument("--study-id")
    s.add_argument("--series-number", type=int)
    s.add_argument("--birth-date")
    s.add_argument("--sex")
    s.add_argument("--referring", help="Referring Physician's Name")
    b = sub.add_parser("bad")
    b.add_argument("outdir")
    c = sub.add_parser("charset")
    c.add_argument("outdir")
    a = p.parse_args()
    {"series": cmd_series, "bad": cmd_bad, "charset": cmd_charset}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
