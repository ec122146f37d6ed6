#!/usr/bin/env python3
"""Dump daq-events HDF5 data files as one JSON document on stdout.

Usage: h5dump_events.py FILE.h5 [FILE.h5 ...]

Output:
    {"files": [{"path": ..., "attrs": {"run", "subrun", "process",
                "format_version", "events"},
                "events": [{"run", "subrun", "event", "sequence_id",
                            "timestamp", "complete",
                            "fragments": [{"fragment_id", "type",
                                           "sequence_id", "timestamp",
                                           "metadata_hex", "payload_hex"}]}]}]}

"attrs.events" is null when the writer did not close the file. Like the Rust
reader (aggregator/src/datafile/, whose format.rs documents the layout), it
takes the shortest consistent prefix of the events when the columns differ in
length, as they may after the writer crashed.

The columns are not listed here: every dataset of /fragments and /events is
read, and each one that is not structural (the offsets below) is dumped under
its own name, so the dump follows the writer's column table
(aggregator/src/datafile/columns.rs; a Rust test checks that a written file
holds exactly that table).

Needs only h5py, numpy and the standard library. Exits 1 with a message on
stderr if a file cannot be read or is not a daq-events file.
"""

import json
import sys

import h5py
import numpy as np

FORMAT_NAME = "daq-events"
FORMAT_VERSION = 2
# The structural columns: where each fragment's bytes are in /fragments/data
# and which fragment rows belong to each event. They are dumped as
# metadata_hex, payload_hex and fragments instead of by name.
DATA = "data"
FRAGMENT_STRUCTURE = ("data_end", "metadata_bytes")
EVENT_STRUCTURE = ("fragment_end",)
# u8 event columns that hold a boolean, dumped as true/false.
FLAGS = ("complete",)


class DumpError(Exception):
    pass


def text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.size == 1:
        return text(value.reshape(-1)[0])
    return str(value)


def integer(value):
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise DumpError(f"expected a scalar, got shape {value.shape}")
        value = value.reshape(-1)[0]
    return int(value)


def rows_within(columns, end_name, available, what, path):
    """(row, start, end) of each row present in every one of `columns`, in
    order, while its end (column `end_name`; a row starts where the one
    before ended) is within `available`."""
    start = 0
    for row in range(min(len(c) for c in columns.values())):
        end = columns[end_name][row]
        if end < start:
            raise DumpError(f"corrupt data in {path}: {what} {row} {end_name} {end} is before {start}")
        if end > available:
            return
        yield row, start, end
        start = end


def dump_file(path):
    with h5py.File(path, "r", locking=False) as f:
        attrs = f.attrs
        if "format" not in attrs or text(attrs["format"]) != FORMAT_NAME:
            raise DumpError(f"{path} is not a {FORMAT_NAME} file")
        version = integer(attrs["format_version"])
        if version != FORMAT_VERSION:
            raise DumpError(f"{path} has unsupported format version {version}")
        file_attrs = {
            "run": integer(attrs["run"]),
            "subrun": integer(attrs["subrun"]),
            "process": text(attrs["process"]),
            "format_version": version,
            "events": integer(attrs["events"]) if "events" in attrs else None,
        }
        data = f["fragments"][DATA][()]
        frag = {name: ds[()].tolist() for name, ds in f["fragments"].items() if name != DATA}
        ev = {name: ds[()].tolist() for name, ds in f["events"].items()}

    # Fragments present in every fragment column whose bytes are within data.
    fragments = []
    for j, start, end in rows_within(frag, "data_end", len(data), "fragment", path):
        split = start + frag["metadata_bytes"][j]
        if split > end:
            raise DumpError(f"corrupt data in {path}: fragment {j} metadata exceeds its data")
        fragment = {name: c[j] for name, c in frag.items() if name not in FRAGMENT_STRUCTURE}
        fragment["metadata_hex"] = data[start:split].tobytes().hex()
        fragment["payload_hex"] = data[split:end].tobytes().hex()
        fragments.append(fragment)

    # Events present in every event column whose fragments are all present.
    events = []
    for i, first, end in rows_within(ev, "fragment_end", len(fragments), "event row", path):
        event = {name: c[i] for name, c in ev.items() if name not in EVENT_STRUCTURE}
        for name in FLAGS:
            event[name] = bool(event[name])
        event["fragments"] = fragments[first:end]
        events.append(event)

    return {"path": path, "attrs": file_attrs, "events": events}


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        files = [dump_file(path) for path in argv[1:]]
    except (OSError, KeyError, DumpError) as err:
        print(f"h5dump_events: {err}", file=sys.stderr)
        return 1
    json.dump({"files": files}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
