"""The README's own commands, run the way a newcomer runs them.

The convention (also written at the top of README.md, in an HTML comment):

* every ```sh block is meant to be run as written: this test runs them in
  README order, one ``bash`` process per block (``set -eo pipefail``; the
  variables a block exports carry over to the next, as in one terminal), in
  a scratch directory laid out like the project (a ``.venv`` link and a copy
  of ``mappings/``), beside a demo started as ``make run`` starts it
  (``bridge run``, HubSpot), with the demo's ``BRIDGE_VAR_DIR`` so the CLI
  finds the demo through ``var/run.json``. ``bridge`` is not on the PATH
  until a block activates the venv, as in a fresh shell;
* in sh blocks only, ``127.0.0.1:8000`` becomes the demo's address and the
  "your values" of the connect sections (:func:`your_values`) become the
  sandbox's: the demo HubSpot app, the second sandbox portal's private-app
  token, a bot registered in the sandbox Telegram, the sandbox Bitrix24
  portal's incoming webhook;
* ```shell blocks are shell commands shown, not run (they start a server,
  need a real vendor account or ids known only later, or would change the
  demo's keys); ```text / ```yaml blocks are output and configuration.

Every sh block must exit 0, and the key ones are checked for what they
printed (:data:`CHECKS`; each check must find its block, so the README
cannot lose these commands silently): the curl loop lands the customer's
message in the CRM and the rep's reply in the customer's chat; ``bridge
status`` shows the demo tenant; ``owners`` lists the sandbox portals' users;
``check-config`` passes; ``install-url`` prints an authorize URL; a bot
registered in the sandbox Telegram connects. Finally a customer writes to
the bot the README connected and the message lands as a note in the portal
whose private-app token the README used: the steps work, not just exit 0.

One demo start is enough: the amoCRM and Bitrix24 app blocks only print
install links, and the Bitrix24 incoming-webhook tenant talks to the
sandbox Bitrix24 that every demo serves under ``/sandbox``. The demo is
given the scratch ``mappings/`` directory (``BRIDGE_MAPPINGS_DIR``), so the
files the README writes there never touch the repository and its worker
reads them too.

Also: README.md and every docs page link only to files that exist in the
repository (and to headings that exist), and none of them uses the team's
planning vocabulary (:data:`PLANNING`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from bench.stack import ROOT
from bench.traffic import wait_until
from sandbox.custom import DEMO_SECRET as CUSTOM_SECRET
from sandbox.custom import DEMO_SYSTEM as CUSTOM_SYSTEM
from tests.support.demo import DemoRun

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: a token the sandbox Telegram accepts (``<bot id>:`` and 35 characters)
BOT_TOKEN = "5550001234:AAH-readme-test-bot-token-012345678"  # noqa: S105 — the sandbox's
BOT_USERNAME = "acme_shop_readme_bot"
#: the demo tenant's slug: ``hubspot-<portal id>`` of the sandbox's first portal
DEMO_SLUG = "hubspot-62515"
#: "your values" the README leaves as written in sh blocks: their commands
#: only print a link built from them
KEPT_AS_WRITTEN = frozenset(
    {
        "your-amocrm-client-id",
        "your-amocrm-client-secret",
        "your-bitrix24-client-id",
        "your-bitrix24-client-secret",
    }
)
#: words from the team's planning, not for users (case-insensitive regexes)
PLANNING = (
    r"\btarget\b",
    r"\bdecisions?\b",
    r"\bthe issue\b",
    r"\bleft for\b",
    r"(?-i:\bTODO\b)",  # upper case only: Bitrix24's to-dos are `todo`
    r"(?-i:\bTBD\b)",
    r"(?-i:\bFIXME\b)",
    r"(?-i:\bXXX\b)",
    r"\bmilestones?\b",
    r"\bsprint\b",
    r"\bthe brief\b",
    r"\bacceptance criteri",
    r"\.\./shared\b",
)


# -- the README's blocks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")


def without_comments(markdown: str) -> str:
    """HTML comments blanked out, keeping the line numbers."""
    return re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), markdown, flags=re.S)


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block (``` fences, possibly indented under a list item),
    with its language and its text de-indented."""
    blocks: list[Block] = []
    lines = without_comments(markdown).splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, start, body = opened["indent"], i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line)
            i += 1
        assert i < len(lines), f"README.md:{start}: unclosed ``` block"
        blocks.append(Block(opened["lang"], "\n".join(body) + "\n", start))
        i += 1
    return blocks


def your_values(base: str, port: int) -> dict[str, str]:
    """README value -> what the test runs instead (in sh blocks, in order)."""
    from sandbox.bitrix24 import config as b24
    from sandbox.hubspot.config import DEFAULTS

    app, second = DEFAULTS["app"], DEFAULTS["portals"][1]
    webhook = f"{base}/sandbox/bitrix24/{b24.DEMO_DOMAIN}/rest/{b24.DEMO_WEBHOOK_USER}/"
    return {
        "https://acme.bitrix24.ru/rest/1/your-webhook-code/": f"{webhook}{b24.DEMO_WEBHOOK_CODE}/",
        "https://bridge.example.com": base,
        "127.0.0.1:8000": f"127.0.0.1:{port}",
        "your-hubspot-client-id": str(app["client_id"]),
        "your-hubspot-client-secret": str(app["client_secret"]),
        "your-hubspot-app-id": str(app["app_id"]),
        "your-hubspot-developer-api-key": str(app["developer_api_key"]),
        "pat-na1-your-private-app-token": str(second["private_app_token"]),
        "your-portal-id": str(second["id"]),
        "your-telegram-bot-token": BOT_TOKEN,
        "whsec_your-signing-secret": CUSTOM_SECRET,
        "https://hooks.example.com/bridge": f"{base}/sandbox/custom/callbacks/{CUSTOM_SYSTEM}",
    }


def substituted(text: str, values: dict[str, str]) -> str:
    for written, instead in values.items():
        text = text.replace(written, instead)
    return text


# -- the demo and a shell beside it ----------------------------------------------------------


@dataclass
class ReadmeDemo(DemoRun):
    """``bridge run`` as ``make run`` starts it, reading its mapping files
    from the scratch project's ``mappings/`` (where the README writes)."""

    mappings_dir: Path = ROOT / "mappings"

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["BRIDGE_MAPPINGS_DIR"] = str(self.mappings_dir)
        return env

    def state(self, vendor: str, **params: str) -> Any:
        answer = self.sandbox(vendor, "/_state", params=params)
        answer.raise_for_status()
        return answer.json()


@dataclass
class Shell:
    """One terminal: each block runs in its own bash, starting from the
    variables the previous blocks exported."""

    workdir: Path
    env: dict[str, str]
    state_file: Path

    def run(self, block: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        script = (
            "set -eo pipefail\n"
            f"source {self.state_file}\n"
            f"cd {self.workdir}\n"
            f"{block}"
            f"export -p > {self.state_file}\n"
        )
        return subprocess.run(  # noqa: S603 — the README's own commands
            ["bash", "-c", script],  # noqa: S607 — bash from the PATH, as a user's shell
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def scratch_project(root: Path) -> Path:
    """A directory laid out like the project: ``.venv`` (a link to the
    project's) and a copy of the shipped mapping files."""
    root.mkdir()
    (root / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    (root / "mappings").mkdir()
    for shipped in sorted((ROOT / "mappings").glob("*.yaml")):
        shutil.copy(shipped, root / "mappings" / shipped.name)
    return root


def fresh_shell_path(path: str) -> str:
    """PATH without the project's venv: ``bridge`` only after activation."""
    venv = str(ROOT / ".venv")
    return ":".join(p for p in path.split(":") if p and not p.startswith(venv))


# -- what the key blocks must print -----------------------------------------------------------

Check = Callable[[ReadmeDemo, str], None]


def _json(out: str) -> Any:
    return json.loads(out)


def _json_docs(out: str) -> list[Any]:
    """Several JSON documents printed one after the other."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(out):
        if out[at].isspace():
            at += 1
            continue
        doc, at = decoder.raw_decode(out, at)
        docs.append(doc)
    return docs


def _portal(demo: ReadmeDemo, portal_id: int) -> dict[str, Any]:
    return demo.state("hubspot", account=str(portal_id))["accounts"][0]


def _customer_message_landed(demo: ReadmeDemo, out: str) -> None:
    answer = _json(out)
    assert answer["delivered"] is True and answer["status"] == 200, answer

    def in_hubspot() -> bool:
        portal = _portal(demo, 62515)
        texts = [m["text"] for t in portal["threads"] for m in t["messages"]]
        return "Hello! Do you deliver?" in texts

    # a reader takes longer than this before typing the next command
    assert wait_until(in_hubspot, timeout=60), _portal(demo, 62515)


def _state_shows_the_customer(demo: ReadmeDemo, out: str) -> None:
    portal = next(p for p in _json(out)["accounts"] if p["portal_id"] == 62515)
    anna = [c for c in portal["contacts"] if c["properties"].get("firstname") == "Anna"]
    # the README names Anna's contact id in a fresh demo
    assert [c["id"] for c in anna] == ["100001"], portal["contacts"]
    assert len(portal["deals"]) == 1 and len(portal["tasks"]) == 1, portal
    thread = next(t for t in portal["threads"] if t["associatedContactId"] == "100001")
    assert [m["text"] for m in thread["messages"]] == ["Hello! Do you deliver?"]


def _rep_replied(demo: ReadmeDemo, out: str) -> None:
    assert _json(out)["webhook"]["status"] == 200, out

    def sent() -> bool:
        got = demo.sandbox("telegram", "/_sent", params={"chat_id": "1001"}).json()["sent"]
        return [s["text"] for s in got] == ["Hi Anna, yes we do!"]

    assert wait_until(sent, timeout=60)


def _customer_got_the_reply(demo: ReadmeDemo, out: str) -> None:
    sent = _json(out)["sent"]
    assert [(s["chat_id"], s["text"]) for s in sent] == [(1001, "Hi Anna, yes we do!")], sent


def _status_shows_the_demo(demo: ReadmeDemo, out: str) -> None:
    assert f"tenant {DEMO_SLUG} [hubspot]: active" in out, out
    assert "inbound (customer -> CRM): synced 1" in out, out


def _tenant_list_shows_the_demo(demo: ReadmeDemo, out: str) -> None:
    rows = [line.split("\t") for line in out.splitlines()]
    assert any(r[1:3] == [DEMO_SLUG, "hubspot"] for r in rows if len(r) > 2), out


def _owner_ids(out: str) -> set[str]:
    return {line.split("\t")[0] for line in out.splitlines() if "\t" in line}


def _demo_owners(demo: ReadmeDemo, out: str) -> None:
    expected = {o["id"] for o in _portal(demo, 62515)["owners"]}
    assert {"70000001", "70000002", "70000003"} <= expected
    assert expected <= _owner_ids(out), out


def _config_ok(demo: ReadmeDemo, out: str) -> None:
    assert "1 file, 1 ok, 0 with errors" in out, out


def _hubspot_install_link(demo: ReadmeDemo, out: str) -> None:
    from sandbox.hubspot.config import DEFAULTS

    link = next(line for line in out.splitlines() if line.startswith("http"))
    client = DEFAULTS["app"]["client_id"]
    assert link.startswith(f"{demo.base}/sandbox/hubspot/oauth/authorize?client_id={client}&")
    callback = quote(f"{demo.base}/oauth/hubspot/callback", safe="")
    assert f"redirect_uri={callback}&" in link, link
    # the link opens the sandbox's consent step (state signed, not yet used)
    assert requests.get(link, timeout=10, allow_redirects=False).status_code < 400


def _private_tenant_created(demo: ReadmeDemo, out: str) -> None:
    assert re.search(r"^tenant acme created \(id \d+\)", out, re.M), out


def _private_portal_owners(demo: ReadmeDemo, out: str) -> None:
    expected = {o["id"] for o in _portal(demo, 62516)["owners"]}
    assert expected and expected <= _owner_ids(out), out
    assert not {"70000001", "70000002", "70000003"} & _owner_ids(out), out


def _amocrm_install_link(demo: ReadmeDemo, out: str) -> None:
    assert out.startswith("https://www.amocrm.ru/oauth?client_id=your-amocrm-client-id&"), out


def _webhook_tenant(demo: ReadmeDemo, out: str) -> None:
    assert re.search(r"^tenant acme-b24 created \(id \d+\)", out, re.M), out
    users = demo.state("bitrix24")["accounts"][0]["users"]
    names = {f"{u['NAME']} {u['LAST_NAME']}" for u in users}
    listed = {line.split("\t")[1] for line in out.splitlines() if line.count("\t") == 2}
    assert names and names <= listed, out


def _bitrix24_install_link(demo: ReadmeDemo, out: str) -> None:
    expected = "https://acme.bitrix24.ru/oauth/authorize/?client_id=your-bitrix24-client-id&"
    assert out.startswith(expected), out


def _bot_connected(demo: ReadmeDemo, out: str) -> None:
    assert re.search(r"^Telegram connected as channel account \d+; webhook registered$", out, re.M)
    bots = {b["token"]: b for b in demo.state("telegram")["accounts"]}
    webhook = bots[BOT_TOKEN]["webhook"]
    assert webhook is not None and webhook["url"].startswith(f"{demo.base}/webhooks/telegram/")
    # the URL named, its key masked (what the admin runs to see it)
    masked = f"{demo.base}/webhooks/telegram/<key> (the key: bridge tenant show acme --reveal)"
    assert f"\nwebhook URL: {masked}\n" in out, out
    assert webhook["url"].rsplit("/", 1)[1] not in out
    assert webhook["has_secret_token"]
    rows = [line.split("\t") for line in out.splitlines() if line.count("\t") == 4]
    assert ["acme", "Acme shop", BOT_TOKEN.split(":")[0], "active"] in [r[1:] for r in rows], out


def _custom_connected(demo: ReadmeDemo, out: str) -> None:
    assert re.search(r"^Custom channel connected as channel account \d+", out, re.M), out
    (system,) = demo.state("custom", account=CUSTOM_SYSTEM)["accounts"]
    assert system["events"] == ["endpoint.connected"], system
    assert system["inbound_url"].startswith(f"{demo.base}/webhooks/custom/"), system
    # the system got the URL with its key; the terminal shows it masked
    assert f"{demo.base}/webhooks/custom/<key> (the key: bridge tenant show acme" in out, out
    assert system["inbound_url"].rsplit("/", 1)[1] not in out


def _custom_message_landed(demo: ReadmeDemo, out: str) -> None:
    assert _json(out) == {"accepted": 1, "ok": True}, out

    def in_hubspot() -> bool:
        return "Hello from the website" in json.dumps(_portal(demo, 62516)["notes"])

    assert wait_until(in_hubspot, timeout=60), _portal(demo, 62516)["notes"]


def _crm_setup(demo: ReadmeDemo, out: str) -> None:
    settings = _json(out)
    # a private-app tenant: the CRM fields, no inbox channel
    assert settings["properties_ready"] is True and settings["channel_id"] == "", settings
    properties = _portal(demo, 62516)["custom_properties"]
    assert "bridge_utm_source" in {p["name"] for p in properties["deals"]}, properties


def _status_shows_acme(demo: ReadmeDemo, out: str) -> None:
    assert "tenant acme [hubspot]: active" in out, out
    assert "slug: acme" in out and "account: 62516" in out, out


def _replayed(demo: ReadmeDemo, out: str) -> None:
    assert out.strip() == "requeued 0 message(s)", out


def _tenant_paused_and_resumed(demo: ReadmeDemo, out: str) -> None:
    assert "tenant acme disabled" in out and "tenant acme enabled" in out, out


def _key_generated(demo: ReadmeDemo, out: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=\n", out), out


def _healthy(demo: ReadmeDemo, out: str) -> None:
    health, ready = _json_docs(out)
    assert health["ok"] is True and health["checks"]["workers"]["ok"] is True, health
    assert ready["ready"] is True, ready


#: (what the block contains, after substitution; what it must print)
CHECKS: list[tuple[str, Check]] = [
    ("/sandbox/telegram/_deliver", _customer_message_landed),
    ("/sandbox/hubspot/_state", _state_shows_the_customer),
    ("/sandbox/hubspot/_reply", _rep_replied),
    ("/sandbox/telegram/_sent?chat_id=1001", _customer_got_the_reply),
    ("bridge status\nbridge tenant list\n", _status_shows_the_demo),
    ("bridge tenant list\nbridge hubspot owners", _tenant_list_shows_the_demo),
    (f"bridge hubspot owners --tenant {DEMO_SLUG}", _demo_owners),
    ("bridge check-config acme\n", _config_ok),
    ("bridge hubspot install-url", _hubspot_install_link),
    ("bridge tenant create --slug acme --crm hubspot", _private_tenant_created),
    ("bridge hubspot owners --tenant acme\n", _private_portal_owners),
    ("bridge amocrm install-url", _amocrm_install_link),
    ("bridge bitrix24 owners --tenant acme-b24", _webhook_tenant),
    ("bridge bitrix24 install-url", _bitrix24_install_link),
    ("bridge telegram connect --tenant acme", _bot_connected),
    ("bridge custom connect --tenant acme", _custom_connected),
    ('-H "webhook-signature: v1,$sig"', _custom_message_landed),
    ("bridge crm setup --tenant acme\n", _crm_setup),
    ("bridge status --tenant acme", _status_shows_acme),
    ("bridge replay --all\n", _replayed),
    ("bridge tenant disable acme", _tenant_paused_and_resumed),
    ("bridge keys generate\n", _key_generated),
    ("/healthz", _healthy),
]


# -- the test ---------------------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[ReadmeDemo]:
    project = scratch_project(tmp_path / "project")
    run = ReadmeDemo(var_dir=project / "var", mappings_dir=project / "mappings")
    run.start()
    try:
        run.wait_banner()
        yield run
        run.stop()
    finally:
        run.kill()


def test_the_readme_commands_work_as_written(demo: ReadmeDemo, tmp_path: Path) -> None:
    readme = README.read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme
    blocks = [b for b in fenced_blocks(readme) if b.lang == "sh"]
    assert len(blocks) >= 15, [str(b) for b in blocks]
    values = your_values(demo.base, demo.port)
    every_sh = "".join(b.text for b in blocks)
    unused = [v for v in values if v not in every_sh]
    assert not unused, f"your values the README no longer uses: {unused}"

    # setup a reader does by hand: a bot of their own at @BotFather
    registered = demo.sandbox(
        "telegram",
        "/_bots",
        json={"token": BOT_TOKEN, "username": BOT_USERNAME, "first_name": "Acme shop"},
    )
    assert registered.status_code == 201, registered.text

    project = demo.var_dir.parent
    state = tmp_path / "shell.env"
    state.write_text("", encoding="utf-8")
    env = dict(demo.env, PATH=fresh_shell_path(demo.env.get("PATH", "")))
    shell = Shell(project, env, state)
    fired: set[str] = set()
    for block in blocks:
        text = substituted(block.text, values)
        left = set(re.findall(r"\byour-[a-z0-9-]+", text)) - KEPT_AS_WRITTEN
        assert not left, f"{block}: a value the test does not know: {sorted(left)}"
        done = shell.run(text)
        assert done.returncode == 0, (
            f"{block} exited {done.returncode}\n$ {text}\n--- stdout\n{done.stdout}\n"
            f"--- stderr\n{done.stderr}\n--- bridge run\n{demo.text[-2000:]}"
        )
        assert "Traceback" not in done.stderr, f"{block}\n{done.stderr}"
        for marker, check in CHECKS:
            if marker in text:
                check(demo, done.stdout)
                fired.add(marker)
    missing = [marker for marker, _ in CHECKS if marker not in fired]
    assert not missing, f"the README lost these commands: {missing}"

    # The steps work, not just exit 0: a customer writes to the bot the
    # README connected, and HubSpot portal 62516 (whose private-app token the
    # README used) gets the deal and the note acme.yaml asks for.
    answer = demo.sandbox(
        "telegram",
        "/_deliver",
        json={"token": BOT_TOKEN, "from": {"id": 2001, "first_name": "Olga"}, "text": "Hi Acme!"},
    )
    assert answer.json()["status"] == 200, answer.json()

    def noted() -> bool:
        portal = _portal(demo, 62516)
        bodies = [n["properties"].get("hs_note_body") or "" for n in portal["notes"]]
        return any("Hi Acme!" in body for body in bodies) and len(portal["deals"]) == 2

    assert wait_until(noted, timeout=60), _portal(demo, 62516)
    # one deal per channel's customer: the website's Anna (above), Telegram's Olga
    deals = sorted(
        (d["properties"]["dealname"], d["properties"]["pipeline"], d["properties"]["dealstage"])
        for d in _portal(demo, 62516)["deals"]
    )
    assert deals == [
        ("Custom channel: Anna", "default", "appointmentscheduled"),
        ("Telegram: Olga", "default", "appointmentscheduled"),
    ]


# -- links and words -------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
PAGES = [README, *sorted(DOCS.rglob("*.md"))]


def _outside_fences(markdown: str) -> str:
    out, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line) or (fenced and line.strip() == "```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


def _prose(markdown: str) -> str:
    """The text outside fenced blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", _outside_fences(markdown))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page."""
    text = _outside_fences(page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_links_stay_in_the_repository_and_resolve(page: Path) -> None:
    text = _prose(without_comments(page.read_text(encoding="utf-8")))
    broken = []
    for match in LINK.finditer(text):
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if ROOT.resolve() not in (resolved, *resolved.parents):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{_page_id(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_planning_words(page: Path) -> None:
    text = without_comments(page.read_text(encoding="utf-8"))
    found = [
        f"line {text[: m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
        for pattern in PLANNING
        for m in re.finditer(pattern, text, re.I)
    ]
    assert not found, f"{_page_id(page)}: " + "; ".join(found)


def test_docs_are_reachable_from_the_readme() -> None:
    """Every docs page is linked from README.md or the docs index."""
    linked = set()
    for page in (README, DOCS / "README.md"):
        for match in LINK.finditer(_prose(page.read_text(encoding="utf-8"))):
            target = match["target"].partition("#")[0]
            if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                linked.add((page.parent / target).resolve())
    orphans = [_page_id(p) for p in DOCS.rglob("*.md") if p.resolve() not in linked]
    assert not orphans, orphans


def test_the_parser_reads_indented_blocks_and_skips_comments() -> None:
    sample = textwrap.dedent(
        """\
        <!--
        ```sh
        not a block
        ```
        -->
        1. Step:

           ```sh
           export A=1
             indented
           ```

        ```shell
        make run
        ```
        """
    )
    blocks = fenced_blocks(sample)
    assert [(b.lang, b.text, b.line) for b in blocks] == [
        ("sh", "export A=1\n  indented\n", 8),
        ("shell", "make run\n", 13),
    ]
