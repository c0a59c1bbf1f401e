"""The UI's words in English and Japanese, and which language a request gets.

Order: `?lang=` (also remembered in a cookie), the `lang` cookie, Accept-Language (first
supported tag by q-value), English.
"""

from __future__ import annotations

LANGS = ("en", "ja")

TEXT: dict[str, dict[str, str]] = {
    "app": {"en": "mailtee archive", "ja": "mailtee メールアーカイブ"},
    "login": {"en": "Log in", "ja": "ログイン"},
    "logout": {"en": "Log out", "ja": "ログアウト"},
    "login_name": {"en": "User name or email address", "ja": "ユーザー名またはメールアドレス"},
    "password": {"en": "Password", "ja": "パスワード"},
    "login_failed": {
        "en": "The user name or password is not correct.",
        "ja": "ユーザー名またはパスワードが正しくありません。",
    },
    "throttled": {
        "en": "Too many failed logins. Try again in {minutes} minute(s).",
        "ja": "ログインの失敗が多すぎます。{minutes} 分後にもう一度お試しください。",
    },
    "expired": {
        "en": "Your session has ended. Please log in again.",
        "ja": "セッションが終了しました。もう一度ログインしてください。",
    },
    "csrf": {
        "en": "The form has expired; reload the page and try again.",
        "ja": "フォームの有効期限が切れました。ページを再読み込みしてください。",
    },
    "search": {"en": "Search", "ja": "検索"},
    "query": {"en": "Search words", "ja": "検索語"},
    "after": {"en": "From date", "ja": "開始日"},
    "before": {"en": "To date", "ja": "終了日"},
    "direction": {"en": "Direction", "ja": "方向"},
    "any": {"en": "Any", "ja": "すべて"},
    "incoming": {"en": "Incoming", "ja": "受信"},
    "outgoing": {"en": "Outgoing", "ja": "送信"},
    "archived": {"en": "Archived", "ja": "取り込み"},
    "date": {"en": "Date", "ja": "日付"},
    "from": {"en": "From", "ja": "差出人"},
    "to": {"en": "To", "ja": "宛先"},
    "cc": {"en": "Cc", "ja": "Cc"},
    "subject": {"en": "Subject", "ja": "件名"},
    "size": {"en": "Size", "ja": "サイズ"},
    "attachment": {"en": "Attachment", "ja": "添付"},
    "att_short": {"en": "Att.", "ja": "添付"},
    "attachments": {"en": "Attachments", "ja": "添付ファイル"},
    "results": {"en": "{n} messages", "ja": "{n} 件"},
    "no_results": {"en": "No messages found.", "ja": "メールは見つかりませんでした。"},
    "newer": {"en": "Newer", "ja": "新しい"},
    "older": {"en": "Older", "ja": "古い"},
    "page": {"en": "Page {n}", "ja": "{n} ページ"},
    "bad_query": {"en": "The search could not be read: {error}", "ja": "検索条件の誤り: {error}"},
    "export_zip": {"en": "Export (zip of .eml)", "ja": "エクスポート (.eml の zip)"},
    "export_mbox": {"en": "Export (mbox)", "ja": "エクスポート (mbox)"},
    "export_hint": {
        "en": "Selected messages, or every result when none is selected.",
        "ja": "選択したメール(選択がなければ検索結果すべて)。",
    },
    "download_eml": {"en": "Download original (.eml)", "ja": "元のメールをダウンロード (.eml)"},
    "raw": {"en": "Source", "ja": "ソース表示"},
    "html_view": {"en": "HTML (safe view)", "ja": "HTML (安全表示)"},
    "text_view": {"en": "Text", "ja": "テキスト"},
    "remote_blocked": {
        "en": "Remote content and scripts are blocked.",
        "ja": "外部コンテンツとスクリプトはブロックされています。",
    },
    "provenance": {"en": "Provenance", "ja": "取得経路"},
    "listener": {"en": "Listener", "ja": "リスナー"},
    "pop3_account": {"en": "POP3 account", "ja": "POP3 アカウント"},
    "outcome": {"en": "Outcome", "ja": "結果"},
    "received": {"en": "Received", "ja": "記録日時"},
    "client": {"en": "Client", "ja": "クライアント"},
    "owners": {"en": "Owners", "ja": "所有者"},
    "back": {"en": "Back to the results", "ja": "検索結果に戻る"},
    "not_found": {"en": "No such message.", "ja": "メールが見つかりません。"},
    "forbidden": {"en": "Not allowed.", "ja": "許可されていません。"},
    "archive_error": {
        "en": "The archived copy cannot be read; the administrator has been told (see the log).",
        "ja": "アーカイブのコピーを読み込めません。管理者がログで確認できます。",
    },
    "admin": {"en": "Administration", "ja": "管理"},
    "status": {"en": "Status", "ja": "状態"},
    "users": {"en": "Users", "ja": "ユーザー"},
    "audit": {"en": "Audit log", "ja": "監査ログ"},
    "role": {"en": "Role", "ja": "権限"},
    "name": {"en": "Name", "ja": "名前"},
    "addresses": {"en": "Addresses", "ja": "アドレス"},
    "messages": {"en": "Messages", "ja": "メール数"},
    "source": {"en": "Source", "ja": "登録元"},
    "actor": {"en": "Actor", "ja": "実行者"},
    "action": {"en": "Action", "ja": "操作"},
    "detail": {"en": "Detail", "ja": "詳細"},
    "filter": {"en": "Filter", "ja": "絞り込み"},
    "service_down": {
        "en": "The service is not answering on its control socket: {error}",
        "ja": "サービスが応答しません: {error}",
    },
    "sessions": {"en": "Sessions", "ja": "セッション"},
    "backlog": {"en": "Reports not yet archived", "ja": "未取り込みのレポート"},
    "disk_free": {"en": "Free disk space", "ja": "ディスク空き容量"},
    "last_errors": {"en": "Last errors", "ja": "最近のエラー"},
    "listeners": {"en": "Listeners", "ja": "リスナー"},
    "none": {"en": "none", "ja": "なし"},
    "times_in": {"en": "Times in {zone}", "ja": "時刻は {zone}"},
    "language": {"en": "日本語", "ja": "English"},
}


def pick_language(query: str | None, cookie: str | None, accept: str | None) -> str:
    for v in (query, cookie):
        if v in LANGS:
            return v  # type: ignore[return-value]
    best, best_q = "en", -1.0
    for item in (accept or "").split(",")[:20]:
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > best_q:
            best, best_q = primary, q
    return best


def translator(lang: str):  # type: ignore[no-untyped-def]
    def t(key: str, **kw: object) -> str:
        entry = TEXT.get(key)
        text = entry.get(lang, entry["en"]) if entry else key
        return text.format(**kw) if kw else text

    return t
