"""One film in the encodings clinical films arrive in: 8- and 16-bit PNG, JPEG, and DICOM (12-bit
MONOCHROME2, 16-bit MONOCHROME1, with a VOI window, rescaled). Used to check that preprocessing gives
every form of a film the same pixels (``tests/test_encodings.py``, ``bench/encodings.py``) and to
write test DICOMs."""

from __future__ import annotations

import io

import cv2
import numpy as np


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, slope: float | None = None,
                intercept: float | None = None, window: tuple[float, float] | None = None,
                declared_shape: tuple[int, int] | None = None, **attributes) -> bytes:
    """A DICOM file (16 bits allocated, ``bits`` stored, unsigned) holding ``pixels``. ``slope`` and
    ``intercept`` (RescaleSlope/Intercept), ``window`` (centre, width) are written when given;
    ``declared_shape`` makes its header claim another size than the pixel data holds; ``attributes``
    (PatientSex=..., StudyDate=...) are set as they are."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = declared_shape or pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = 1.0 if slope is None else slope, intercept or 0.0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for name, value in attributes.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def forms(film: np.ndarray) -> dict[str, tuple[str, bytes]]:
    """The 8-bit film ``film`` in each form: name -> (file suffix, bytes). Each holds the same picture:
    a linear map of the 8-bit values (inverted for MONOCHROME1), or JPEG at quality 95."""
    v = film.astype(np.int64)
    return {
        "png8": (".png", cv2.imencode(".png", film)[1].tobytes()),
        "png16": (".png", cv2.imencode(".png", (v * 257).astype(np.uint16))[1].tobytes()),
        "jpeg95": (".jpg", cv2.imencode(".jpg", film, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()),
        "dicom12_mono2": (".dcm", dicom_bytes(v * 16, "MONOCHROME2", 12)),
        "dicom16_mono1": (".dcm", dicom_bytes(65535 - v * 257, "MONOCHROME1", 16)),
        "dicom12_window": (".dcm", dicom_bytes(v * 16, "MONOCHROME2", 12, window=(2040, 4096))),
        "dicom12_rescaled": (".dcm", dicom_bytes(v * 8, "MONOCHROME2", 12, slope=2.0, intercept=-1024.0)),
    }
