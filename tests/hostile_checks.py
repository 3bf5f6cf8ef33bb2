"""What an SVG drawn by dot may contain when every name in the graph is hostile: parsed as
XML, no processing instruction but the XML declaration, no script, image, foreignObject,
no links (tgraph sets no URL), no event handlers, no reference to anything outside."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

FORBIDDEN_TAGS = {"script", "image", "foreignObject", "iframe", "object", "embed", "use",
                  "style"}
LINK_ATTRS = {"href", "src", "action", "formaction"}


def svg_injections(data: bytes) -> list[str]:
    """Injected constructs found in ``data`` (an SVG file's bytes); empty when clean.
    A file that is not well-formed XML is itself reported."""
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_pis=True, insert_comments=False))
    try:
        root = ET.fromstring(data, parser=parser)
    except ET.ParseError as e:
        return [f"not well-formed XML: {e}"]
    found = []
    if b"<?xml-stylesheet" in data or b"<!ENTITY" in data:
        found.append("stylesheet PI or entity declaration")
    for el in root.iter():
        if el.tag is ET.ProcessingInstruction:
            found.append(f"processing instruction {el.text!r}")
            continue
        tag = el.tag.rpartition("}")[2]
        if tag in FORBIDDEN_TAGS:
            found.append(f"<{tag}> element")
        for key, value in el.attrib.items():
            name = key.rpartition("}")[2]
            if name in LINK_ATTRS or name.startswith("on"):
                found.append(f"attribute {name}={value[:60]!r} on <{tag}>")
            if "javascript:" in value.replace(" ", "").lower() and name != "title":
                found.append(f"javascript: in {name} of <{tag}>")
    return found


# attributes through which dot reads a file, links out or runs a script
DANGEROUS_ATTRS = {"URL", "href", "image", "shapefile", "stylesheet", "imagepath", "fontpath",
                   "target", "edgeURL", "headURL", "tailURL", "labelURL", "edgehref"}


def dot_objects(dot_file: Path) -> list[dict]:
    """The graph, its nodes/clusters and its edges as dot itself parses them (-Tjson0)."""
    done = subprocess.run(["dot", "-Tjson0", str(dot_file)], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    d = json.loads(done.stdout)
    return [d, *d.get("objects", []), *d.get("edges", [])]


def dot_injections(dot_file: Path) -> list[str]:
    """Dangerous attributes on the graph, any cluster, node or edge of a DOT file, as
    Graphviz's own parser reads it (gvpr: parsing only, so a file whose layout trips a
    Graphviz bug is still judged); empty when clean. A file gvpr cannot parse is reported."""
    test = " || ".join(f'aget(x, "{a}") != ""' for a in sorted(DANGEROUS_ATTRS))
    program = (
        "BEGIN { int bad(obj_t x) { return " + test + "; }"
        " int scan(graph_t g) { graph_t s; if (bad(g)) print(\"graph \" + g.name);"
        " for (s = fstsubg(g); s != NULL; s = nxtsubg(s)) scan(s); return 0; } }"
        " BEG_G { scan($G); } N { if (bad($)) print(\"node \" + $.name); }"
        " E { if (bad($)) print(\"edge \" + $.name); }")
    done = subprocess.run(["gvpr", program, str(dot_file)], capture_output=True, check=False)
    if done.returncode:
        return [f"gvpr cannot parse it: {done.stderr.decode(errors='replace')[-200:]}"]
    return done.stdout.decode(errors="replace").splitlines()


def html_injections(data: bytes) -> list[str]:
    """Injected constructs in a viewer page: the page must hold exactly its two scripts (the
    JSON data block and the viewer), its no-network policy, and data that parses as JSON
    with no tag-closing sequence left in it; every name from the graph lives in that data."""
    text = data.decode("utf-8", "replace")
    found = []
    if text.lower().count("<script") != 2 or text.lower().count("</script") != 2:
        found.append(f"{text.lower().count('<script')} <script> tags, expected 2")
    if "content=\"default-src 'none'; " not in text:
        found.append("the page lost its Content-Security-Policy")
    head = '<script type="application/json" id="tgraph-data">'
    start = text.find(head)
    end = text.find("</script>", start)
    if start < 0 or end < 0:
        return [*found, "no data block"]
    block = text[start + len(head):end]
    if "<!--" in block or "<script" in block.lower():
        found.append("markup inside the data block")
    try:
        json.loads(block)
    except ValueError as e:
        found.append(f"the data block is not JSON: {e}")
    return found
