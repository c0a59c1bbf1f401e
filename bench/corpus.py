"""Generate a realistic mail corpus as a Maildir (for bench/ingest.py and bench/search.py).

    python bench/corpus.py OUT_DIR [--count 100000] [--seed 1]

Shape (deterministic for a seed): threads of 1-12 messages whose replies quote the
previous message; ~35% mailing-list traffic (List-* headers, footer); Received chains,
DKIM signatures; ~60% multipart/alternative (text + HTML); 10% Japanese (ISO-2022-JP,
Shift_JIS or UTF-8 base64); 20% with attachments (PDF-like, CSV/text, images, Office
zips; log-normal sizes). Body text is drawn Zipf-style from a vocabulary of common English
words plus generated ones. Prints one JSON line with the count, total and median size.
"""

from __future__ import annotations

import argparse
import base64
import email.header
import email.utils
import json
import random
import statistics
import time
import zlib
from pathlib import Path

COMMON = """the of and to in is you that it he was for on are as with his they at be this have
from or one had by word but not what all were we when your can said there use an each which
she do how their if will up other about out many then them these so some her would make like
him into time has look two more write go see number no way could people my than first water
been call who oil its now find long down day did get come made may part over new sound take
only little work know place year live me back give most very after thing our just name good
sentence man think say great where help through much before line right too mean old any same
tell boy follow came want show also around form three small set put end does another well
large must big even such because turn here why ask went men read need land different home us
move try kind hand picture again change off play spell air away animal house point page letter
mother answer found study still learn should america world invoice meeting schedule project
budget report quarterly review deadline contract customer order shipment payment account
server database network release deploy ticket issue patch version update security password
login backup storage migration kernel driver compile build test failure regression mailing
list subscribe unsubscribe agenda minutes proposal draft attached please regards thanks best
team office conference call tomorrow monday tuesday wednesday thursday friday weekend""".split()

JAPANESE = """請求書 見積書 納品書 会議 打ち合わせ 資料 送付 確認 お願い いたします ご連絡
よろしく お世話 なっております 担当 営業 部長 課長 株式会社 来週 今週 月曜日 金曜日 予定 変更
契約 発注 支払い 期限 至急 ご対応 添付 ファイル 修正 版 プロジェクト 進捗 報告 サーバー
障害 復旧 メンテナンス 東京 大阪 名古屋 出張 経費 精算 申請 承認 議事録 共有 検討 提案
お客様 問い合わせ 回答 製品 価格 在庫 出荷 手配 ありがとうございます 申し訳ございません""".split()

NAMES = """alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert
sybil trent victor walter yuki taro hanako kenji sakura hiroshi aiko""".split()
DOMAINS = [
    "example.com",
    "example.org",
    "corp.example.jp",
    "lists.example.net",
    "mail.example.co.jp",
]
LISTS = ["dev", "announce", "users", "ops", "sales-jp"]


def _vocabulary(rng: random.Random, n: int = 20000) -> list[str]:
    syll = [
        "ka",
        "to",
        "ri",
        "mon",
        "sel",
        "ver",
        "al",
        "in",
        "dra",
        "pe",
        "lo",
        "sta",
        "qu",
        "ex",
        "tri",
        "no",
        "ble",
        "ment",
        "ing",
        "er",
        "or",
        "ion",
        "ca",
        "de",
    ]
    words = list(COMMON)
    seen = set(words)
    while len(words) < n:
        w = "".join(rng.choice(syll) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.vocab = _vocabulary(self.rng)
        weights = [1 / (i + 1) ** 1.05 for i in range(len(self.vocab))]
        total = sum(weights)
        acc, self.cum = 0.0, []
        for w in weights:
            acc += w / total
            self.cum.append(acc)
        self.people = [f"{n}{i if i else ''}@{d}" for n in NAMES for i in range(4) for d in DOMAINS]
        self.when = 1_700_000_000

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.vocab, cum_weights=self.cum, k=n)

    def paragraph(self, jp: bool) -> str:
        if jp:
            return "".join(
                self.rng.choice(JAPANESE) + self.rng.choice(["", "、", "。", "を", "の"])
                for _ in range(self.rng.randint(20, 60))
            )
        sentences = []
        for _ in range(self.rng.randint(2, 7)):
            s = " ".join(self.words(self.rng.randint(6, 20)))
            sentences.append(s[0].upper() + s[1:] + ".")
        return " ".join(sentences)

    def body(self, jp: bool) -> str:
        paras = [self.paragraph(jp) for _ in range(int(self.rng.lognormvariate(2.35, 0.6)) + 1)]
        return "\n\n".join(_wrap(p) for p in paras)

    def attachment(self) -> tuple[str, str, bytes]:
        kind = self.rng.choices(["pdf", "csv", "jpg", "xlsx", "txt"], [35, 15, 25, 15, 10])[0]
        size = int(min(self.rng.lognormvariate(10.2, 1.0), 2_000_000))  # median ~27 KB
        if kind in ("csv", "txt"):
            rows: list[str] = []
            total = 0
            while total < size:
                rows.append(",".join(self.words(6)) + f",{self.rng.randint(0, 99999)}")
                total += len(rows[-1]) + 2
            data = "\r\n".join(rows).encode()
        elif kind == "pdf":
            text = " ".join(self.words(size // 6)).encode()
            data = b"%PDF-1.4\n" + zlib.compress(text, 6) + self.rng.randbytes(size // 8)
        else:
            data = self.rng.randbytes(size)
        names = {
            "pdf": "application/pdf",
            "csv": "text/csv",
            "jpg": "image/jpeg",
            "txt": "text/plain",
            "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
        name = f"{self.rng.choice(self.words(30))}_{self.rng.randint(1, 999)}.{kind}"
        return name, names[kind], data

    def message(self, thread: dict, i: int) -> bytes:
        rng = self.rng
        self.when += rng.randint(5, 400)
        jp = thread["jp"]
        frm = rng.choice(thread["people"])
        to = [p for p in thread["people"] if p != frm][:3] or [rng.choice(self.people)]
        msgid = f"<{thread['id']}.{i}.{rng.getrandbits(40):x}@{frm.split('@')[1]}>"
        subject = thread["subject"] if i == 0 else "Re: " + thread["subject"]
        body = self.body(jp)
        if thread["last_body"]:
            quoted = "\n".join("> " + line for line in thread["last_body"].splitlines()[:120])
            body += f"\n\nOn {email.utils.formatdate(self.when - 3600)}, someone wrote:\n{quoted}"
        body += (
            "\n\n-- \n"
            + frm.split("@")[0].title()
            + "\n"
            + "Example Corp, "
            + rng.choice(["Tokyo", "Osaka", "Berlin", "Boston"])
        )
        lst = thread["list"]
        if lst:
            body += (
                f"\n_______________________________________________\n{lst} mailing list\n"
                f"{lst}@lists.example.net\nhttps://lists.example.net/mailman/listinfo/{lst}"
            )
        thread["last_body"] = body
        charset = thread["charset"] if jp else "utf-8"
        h = []
        for hop in range(rng.randint(2, 5)):
            h.append(
                f"Received: from mx{hop}.{rng.choice(DOMAINS)} "
                f"(mx{hop}.example [192.0.2.{hop + 1}])\r\n"
                f"\tby mail.example.com (Postfix) with ESMTPS id {rng.getrandbits(40):X}\r\n"
                f"\tfor <{to[0]}>; {email.utils.formatdate(self.when - hop)}"
            )
        sig = base64.b64encode(rng.randbytes(256)).decode()
        h.append(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d="
            + frm.split("@")[1]
            + "; s=sel1;\r\n\th=from:to:subject:date:message-id;\r\n\tb="
            + "\r\n\t".join(sig[k : k + 72] for k in range(0, len(sig), 72))
        )
        subj = (
            email.header.Header(subject, "iso-2022-jp" if charset != "utf-8" else "utf-8").encode()
            if not subject.isascii()
            else subject
        )
        h += [
            f"From: {frm.split('@')[0].title()} <{frm}>",
            f"To: {', '.join(to)}",
            f"Subject: {subj}",
            f"Date: {email.utils.formatdate(self.when)}",
            f"Message-ID: {msgid}",
        ]
        if thread["refs"]:
            h += [
                f"In-Reply-To: {thread['refs'][-1]}",
                "References: " + "\r\n ".join(thread["refs"][-8:]),
            ]
        if lst:
            h += [
                f"List-Id: {lst} <{lst}.lists.example.net>",
                f"List-Unsubscribe: <mailto:{lst}-leave@lists.example.net>",
                f"List-Post: <mailto:{lst}@lists.example.net>",
                "Precedence: list",
            ]
        thread["refs"].append(msgid)
        h.append("MIME-Version: 1.0")
        text_part = _text_part(body, charset)
        parts = [text_part]
        if rng.random() < 0.6:
            html = (
                "<html><body>"
                + "".join(
                    f'<p style="font-family:Arial,sans-serif;font-size:10pt">{p}</p>\r\n'
                    for p in body.split("\n\n")
                )
                + "</body></html>"
            )
            alt = _multipart("alternative", [text_part, _text_part(html, "utf-8", "html")], rng)
            parts = [alt]
        if rng.random() < 0.2:
            name, ctype, data = self.attachment()
            b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
            parts.append(
                f'Content-Type: {ctype}; name="{name}"\r\n'
                f'Content-Disposition: attachment; filename="{name}"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n".encode()
                + b64
            )
        top = parts[0] if len(parts) == 1 else _multipart("mixed", parts, rng)
        return "\r\n".join(h).encode() + b"\r\n" + top

    def new_thread(self, n: int) -> dict:
        rng = self.rng
        jp = rng.random() < 0.10
        subject = (
            "".join(rng.choice(JAPANESE) for _ in range(rng.randint(2, 5)))
            if jp
            else " ".join(self.words(rng.randint(3, 8))).capitalize()
        )
        if jp and rng.random() < 0.3:
            subject = "【至急】" + subject
        return {
            "id": n,
            "jp": jp,
            "subject": subject,
            "refs": [],
            "last_body": "",
            "people": rng.sample(self.people, rng.randint(2, 5)),
            "list": f"{rng.choice(LISTS)}" if rng.random() < 0.35 else None,
            "charset": rng.choice(["iso-2022-jp", "shift_jis", "utf-8"]),
        }


def _wrap(text: str, width: int = 72) -> str:
    lines, line = [], ""
    for w in text.split(" "):
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return "\n".join(lines)


def _text_part(text: str, charset: str, sub: str = "plain") -> bytes:
    if charset == "iso-2022-jp":
        data, cte = text.encode("iso2022_jp_ext", "replace"), "7bit"
    elif charset == "shift_jis":
        data = base64.encodebytes(text.encode("cp932", "replace"))
        cte = "base64"
    elif text.isascii():
        data, cte = text.encode(), "7bit"
    else:
        data, cte = base64.encodebytes(text.encode()), "base64"
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head = (
        f"Content-Type: text/{sub}; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    )
    return head.encode() + data + b"\r\n"


def _multipart(sub: str, parts: list[bytes], rng: random.Random) -> bytes:
    b = f"----=_Part_{rng.getrandbits(48):x}"
    out = f'Content-Type: multipart/{sub}; boundary="{b}"\r\n\r\n'.encode()
    for p in parts:
        out += f"--{b}\r\n".encode() + p + b"\r\n"
    return out + f"--{b}--\r\n".encode()


def generate(out: Path, count: int, seed: int = 1) -> dict:
    gen = Generator(seed)
    for sub in ("cur", "new", "tmp"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    threads: list[dict] = []
    sizes = []
    n_threads = 0
    for i in range(count):
        if not threads or gen.rng.random() < 0.35:
            threads.append(gen.new_thread(n_threads))
            n_threads += 1
            threads = threads[-200:]
        t = gen.rng.choice(threads[-50:])
        raw = gen.message(t, len(t["refs"]))
        (out / "cur" / f"{1700000000 + i}.{i}_{seed}.bench:2,S").write_bytes(raw)
        sizes.append(len(raw))
    return {
        "count": count,
        "threads": n_threads,
        "bytes": sum(sizes),
        "median_size": int(statistics.median(sizes)),
        "mean_size": int(statistics.mean(sizes)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t = time.perf_counter()
    result = generate(args.out, args.count, args.seed)
    result["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
