"""Dates ftpsync wrote in the cron's locale before it forced POSIX (late 2008) (pure).

Releases of November 2008 ran `date -u` in whatever locale cron had: "Mi 3. Dez 13:15:10 UTC
2008", "mer. 03 déc. 2008 13:15:10 UTC", "2008年 12月  3日 水曜日 13:15:10 UTC". What every
such line has is a time, a four-digit year, a zero-offset zone and a day; the month is a name
in some language or a number. `parse_locale_date` reads those pieces wherever they sit and
refuses a line that leaves any of them ambiguous, so a date is either read exactly or reported.

It cannot see a 12-hour clock written without an am/pm marker (glibc's id_ID does that): such a
line reads as the morning hour.
"""

# ruff: noqa: RUF001  # month names in Greek and Cyrillic are meant to look like Latin ones

from __future__ import annotations

import calendar
import datetime as dt
import re
import unicodedata

__all__ = ["LocaleDateError", "looks_like_date", "parse_locale_date"]

# Month names and abbreviations of the languages glibc had locales for in 2008 (from glibc's
# own abmon, mon, ab_alt_mon and alt_mon), folded as `_fold` folds them; January first. A name
# that means different months in two languages would be left out, so that a line using it is
# refused rather than guessed; none does among the locales that print month names (Croatian,
# whose "listopad" is the Polish and Czech November's October, prints numbers).
_MONTH_NAMES = (
    "ene enero gen gener gennaio ian ianuarie jaan jaanuar jan janeiro januar januari "
    "january janv janvaris janvier led leden ledna oca ocak saus sausio sausis sty styczen "
    "stycznia tammi tammikuu xan xaneiro ιαν ιανουαριοσ ιανουαριου січ січень січня янв "
    "январь января яну януари",
    "feb febbraio febr febreiro febrer febrero februar februari februarie februaris "
    "february fev fevereiro fevr fevrier helmi helmikuu lut lutego luty sub subat uno unor "
    "unora vas vasario vasaris veebr veebruar φεβ φεβρουαριοσ φεβρουαριου лют лютии лютого "
    "фев февраль февраля февруари",
    "bre brezen brezna kov kovas kovo maalis maaliskuu maart mar marc marca march marcius "
    "marco marec mars mart martie marts marz marzec marzo mrt μαρ μαρτιοσ μαρτιου бер "
    "березень березня мар март марта",
    "abr abril apr april aprile aprilie aprilis aprill avril bal balandis balandzio dub "
    "duben dubna huhti huhtikuu kwi kwiecien kwietnia nis nisan απρ απριλιοσ απριλιου апр "
    "апрель апреля април кві квітень квітня",
    "geg geguze geguzes kve kveten kvetna mag maggio mai maig maijs maio maj maja majus may "
    "mayis mayo mei touko toukokuu μαι μαιοσ μαιου маи мая тра травень травня",
    "birz birzelio birzelis cen cerven cervna cze czerwca czerwiec giu giugno haz haziran "
    "iun iunie juin jun june junho juni junij junijs junio junius juny juuni kesa kesakuu "
    "xun xuno ιουν ιουνιοσ ιουνιου июн июнь июня чер червень червня юни",
    "cec cervence cervenec heina heinakuu iul iulie juil juillet jul julho juli julij "
    "julijs julio juliol julius july juuli liep liepa liepos lip lipca lipiec lug luglio "
    "tem temmuz xul xullo ιουλ ιουλιοσ ιουλιου июл июль июля лип липень липня юли",
    "ag ago agost agosto agu agust agustos aout aug august augusti augusts augustus "
    "augusztus avg avgust elo elokuu rugp rugpjucio rugpjutis sie sierpien sierpnia srp "
    "srpen srpna αυγ αυγουστοσ αυγουστου авг август августа сер серпень серпня",
    "eyl eylul rugs rugsejis rugsejo sep sept september septembre septembrie septembris "
    "septiembre set setembre setembro settembre syys syyskuu szept szeptember wrz wrzesien "
    "wrzesnia zar zari σεπ σεπτεμβριοσ σεπτεμβριου вер вересень вересня сен сентябрь "
    "сентября сеп септември",
    "eki ekim loka lokakuu oct october octobre octombrie octubre okt oktober oktobris "
    "oktoober ott ottobre out outubro paz pazdziernik pazdziernika rij rijen rijna spal "
    "spalio spalis οκτ οκτωβριοσ οκτωβριου жов жовтень жовтня окт октомври октябрь октября",
    "kas kasim lapkr lapkricio lapkritis lis listopad listopada listopadu marras marraskuu "
    "noiembrie nov november novembre novembris novembro noviembre νοε νοεμβριοσ νοεμβριου "
    "лис листопад листопада ное ноември ноя ноябрь ноября",
    "ara aralik dec december decembre decembrie decembris decembro des desember desembre "
    "dets detsember dez dezember dezembro dic dicembre diciembre gru grudnia grudzien gruod "
    "gruodis gruodzio joulu joulukuu pro prosince prosinec δεκ δεκεμβριοσ δεκεμβριου гру "
    "грудень грудня дек декабрь декабря декември",
)
_MONTHS = {name: i for i, names in enumerate(_MONTH_NAMES, 1) for name in names.split()}
_TIME = re.compile(r"(?<!\d)(\d{1,2})[:.](\d{2})[:.](\d{2})(?!\d)")
_ZONE = re.compile(r"(?<![\w+-])(?:UTC|GMT|UT|[+-]00:?00)(?![\w])")
_NUMERIC_DMY = re.compile(r"(?<!\d)(\d{1,2})\.(\d{1,2})\.(\d{4})(?!\d)")
_CJK_YMD = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日")
_WORD = re.compile(r"\d+|[^\W\d_]+")
_PM = frozenset({"pm", "μμ"})
_AM = frozenset({"am", "πμ"})
_PM_CJK = ("午後", "下午", "오후")
_AM_CJK = ("午前", "上午", "오전")


class LocaleDateError(ValueError):
    """A line that is not a date this module can read exactly; str() says what is missing."""


def _fold(word: str) -> str:
    word = word.casefold().replace("ı", "i")
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def looks_like_date(text: str) -> bool:
    """Whether `text` has the time of day and the UTC zone of a `date -u` line, readable or not."""
    match = _TIME.search(text)
    return match is not None and bool(
        _ZONE.search(text[: match.start()] + " " + text[match.end() :])
    )


def _month(words: list[str]) -> int:
    found = [(i, _MONTHS[w]) for i, w in enumerate(words) if w in _MONTHS]
    months = {m for _, m in found}
    if len(months) > 1:
        # A weekday can spell like a month (Spanish and Italian "mar" is Tuesday and March);
        # the weekday comes first on every such line.
        months = {m for i, m in found if i > 0}
    if len(months) != 1:
        what = "no month name" if not months else "more than one month name"
        raise LocaleDateError(f"{what} in {' '.join(words)!r}")
    return months.pop()


def parse_locale_date(text: str) -> float:
    """Unix time of a `date -u` line in any locale; LocaleDateError when it cannot be exact.

    Needs one H:MM:SS (or H.MM.SS) time, one UTC, GMT or +0000 zone, and either a numeric
    d.m.yyyy or CJK date, or one four-digit year, one day number and one month name.
    """
    time_match = _TIME.search(text)
    if time_match is None:
        raise LocaleDateError("no time of day")
    hour, minute, second = (int(g) for g in time_match.groups())
    rest = text[: time_match.start()] + " " + text[time_match.end() :]
    if not _ZONE.search(rest):
        raise LocaleDateError("no UTC zone: not the output of date -u")
    rest = _ZONE.sub(" ", rest)
    words = [_fold(w) for w in _WORD.findall(rest)]
    if any(marker in rest for marker in _PM_CJK) or _PM.intersection(words):
        hour = hour % 12 + 12
    elif any(marker in rest for marker in _AM_CJK) or _AM.intersection(words):
        hour %= 12
    if match := _CJK_YMD.search(rest):
        year, month, day = (int(g) for g in match.groups())
    elif match := _NUMERIC_DMY.search(rest):
        day, month, year = (int(g) for g in match.groups())
    else:
        numbers = [w for w in words if w.isdigit()]
        years = [int(n) for n in numbers if len(n) == 4]
        days = [int(n) for n in numbers if len(n) <= 2]
        if len(years) != 1:
            raise LocaleDateError("no single four-digit year")
        if len(days) != 1:
            raise LocaleDateError("no single day of the month")
        year, day = years[0], days[0]
        month = _month([w for w in words if not w.isdigit()])
    try:
        moment = dt.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise LocaleDateError(f"impossible date: {exc}") from None
    return float(calendar.timegm(moment.timetuple()))
