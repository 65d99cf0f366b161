"""XMP labels for digiKam, darktable and Lightroom: read-merge-write of sidecars and in-file XMP.

The layers, each importing only those above it:

- packet.py: one XMP packet parsed with expat into a position-aware tree (DOCTYPE refused,
  UTF-16 read as UTF-8, UTF-32 refused);
- labels.py: what iqs writes (pick label, rating, color labels, `Xmp.iqs.*`) and whose a
  label is: a person's labels are kept unless overwrite;
- merge.py: the text merge, iqs's own `rdf:Description` in, every other byte kept;
- files.py: sidecar and in-file reads and writes (pyexiv2), safe reads, atomic writes.

What this package exports below is its API; the rest is internal to the layers.
"""

from .files import (IN_FILE_SUFFIXES, MAX_SIDECAR_BYTES, SIDECAR_STYLES, WriteOutcome,
                    WriteRecorder, existing_sidecars, read_labels, sidecar_in_use, sidecar_path, target_path,
                    write_labels, write_person_labels, write_shot, writes_in_file)
from .labels import (COLOR_LABELS, DIGIKAM_NS, IQS_NS, PICK_LABELS, REJECTED_RATING, XMP_NS,
                     is_set, same_value, set_by_person)
from .packet import RDF_NS, XmpError

__all__ = [
    "COLOR_LABELS", "DIGIKAM_NS", "IN_FILE_SUFFIXES", "IQS_NS", "MAX_SIDECAR_BYTES",
    "PICK_LABELS", "RDF_NS", "REJECTED_RATING", "SIDECAR_STYLES", "WriteOutcome",
    "WriteRecorder", "XMP_NS", "XmpError", "existing_sidecars", "is_set", "read_labels", "same_value", "set_by_person",
    "sidecar_in_use", "sidecar_path", "target_path", "write_labels", "write_person_labels",
    "write_shot", "writes_in_file",
]
