#!/usr/bin/env python3
"""Prints the URI and keyring of the machine's own apt source for its main suite.

tools/run-tests.sh fetches one package from the same archive's backports
suite; taking the archive from the machine's configuration (deb822 .sources
files or one-line .list entries) keeps the script working behind any mirror.
Output: one line, "URI<TAB>KEYRING" (KEYRING may be empty). Exit 1 when no
source names the main suite.
"""
import glob
import os
import shlex
import sys

APT = os.environ.get("TOLLGATE_APT_ETC", "/etc/apt")


def codename():
    try:
        with open(os.environ.get("TOLLGATE_OS_RELEASE", "/etc/os-release"), encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "VERSION_CODENAME":
                    return value.strip('"')
    except OSError:
        pass
    return ""


def deb822_stanzas(path):
    stanza, key = {}, None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.startswith("#"):
                continue
            if not line.strip():
                if stanza:
                    yield stanza
                stanza, key = {}, None
                continue
            if line[0] in " \t" and key:  # continuation line
                stanza[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def from_deb822(suite):
    for path in sorted(glob.glob(os.path.join(APT, "sources.list.d", "*.sources"))):
        for st in deb822_stanzas(path):
            if st.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in st.get("types", "").split():
                continue
            if suite not in st.get("suites", "").split():
                continue
            uris = st.get("uris", "").split()
            if uris:
                return uris[0], st.get("signed-by", "")
    return None


def from_one_line(suite):
    paths = [os.path.join(APT, "sources.list")]
    paths += sorted(glob.glob(os.path.join(APT, "sources.list.d", "*.list")))
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            keyring = ""
            if words and words[0].startswith("["):
                opts = []
                while words:
                    w = words.pop(0)
                    opts.append(w)
                    if w.endswith("]"):
                        break
                for o in " ".join(opts).strip("[]").split():
                    k, _, v = o.partition("=")
                    if k == "signed-by":
                        keyring = v
            if len(words) >= 2 and words[1] == suite:
                return words[0], keyring
    return None


def main():
    suite = codename()
    if not suite:
        print("no VERSION_CODENAME in os-release", file=sys.stderr)
        return 1
    found = from_deb822(suite) or from_one_line(suite)
    if not found:
        print(f"no apt source for suite {suite}", file=sys.stderr)
        return 1
    print(f"{found[0].rstrip('/')}\t{found[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
