"""Word lists of the near-miss guard: negations, antonym pairs, synonyms, number words, stopwords."""

from __future__ import annotations

# NOTE: contractions are expanded before tokenising, so "doesn't" arrives as "does not".
NEGATIONS = frozenset({"not", "no", "never", "without", "none", "nothing", "nobody", "neither", "nor", "non"})

# Pairs of words whose swap turns a question into a different one. Compared after stemming, so
# "enable" also covers "enabled", "enables" and "enabling". Particle verbs ("zoom in") are joined
# into one token first (PHRASES below).
ANTONYM_PAIRS: tuple[tuple[str, str], ...] = (
    ("enable", "disable"),
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("add", "remove"),
    ("add", "delete"),
    ("add", "subtract"),
    ("insert", "delete"),
    ("create", "delete"),
    ("create", "drop"),
    ("create", "destroy"),
    ("start", "stop"),
    ("start", "end"),
    ("begin", "end"),
    ("allow", "deny"),
    ("allow", "block"),
    ("allow", "forbid"),
    ("accept", "reject"),
    ("grant", "revoke"),
    ("upload", "download"),
    ("import", "export"),
    ("push", "pull"),
    ("send", "receive"),
    ("read", "write"),
    ("get", "set"),
    ("load", "unload"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("minimize", "maximize"),
    ("smallest", "largest"),
    ("lowest", "highest"),
    ("before", "after"),
    ("first", "last"),
    ("encrypt", "decrypt"),
    ("encode", "decode"),
    ("compress", "decompress"),
    ("compress", "extract"),
    ("zip", "unzip"),
    ("install", "uninstall"),
    ("mount", "unmount"),
    ("lock", "unlock"),
    ("show", "hide"),
    ("open", "close"),
    ("connect", "disconnect"),
    ("attach", "detach"),
    ("subscribe", "unsubscribe"),
    ("serialize", "deserialize"),
    ("ascending", "descending"),
    ("advantage", "disadvantage"),
    ("pros", "cons"),
    ("benefit", "drawback"),
    ("zoom_in", "zoom_out"),
    ("log_in", "log_out"),
    ("sign_in", "sign_out"),
    ("scale_up", "scale_down"),
    ("upgrade", "downgrade"),
    ("uppercase", "lowercase"),
    ("include", "exclude"),
    ("expand", "collapse"),
    ("freeze", "unfreeze"),
    ("pause", "resume"),
    ("input", "output"),
    ("inner", "outer"),
    ("left", "right"),
    ("horizontal", "vertical"),
    ("prefix", "suffix"),
    ("head", "tail"),
    ("above", "below"),
    ("inside", "outside"),
    ("public", "private"),
    ("synchronous", "asynchronous"),
    ("sync", "async"),
    ("true", "false"),
    ("success", "failure"),
    ("buy", "sell"),
    ("win", "lose"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("hot", "cold"),
    ("positive", "negative"),
    ("forward", "backward"),
    ("client", "server"),
    ("encrypted", "plaintext"),
)

# Prefixes that negate a word: "uninstall" against "install", "invalid" against "valid". Applied to
# stems of at least MIN_PREFIXED_STEM characters, so short words do not collide ("fine"/"define").
NEGATING_PREFIXES = ("un", "dis", "de", "in", "im", "il", "ir", "non")
MIN_PREFIXED_STEM = 4

# Multi-word expressions joined (or replaced) before tokenising.
PHRASES: tuple[tuple[str, str], ...] = (
    ("turn on", "enable"),
    ("switch on", "enable"),
    ("turn off", "disable"),
    ("switch off", "disable"),
    ("zoom in", "zoom_in"),
    ("zoom out", "zoom_out"),
    ("log in", "log_in"),
    ("log out", "log_out"),
    ("sign in", "sign_in"),
    ("sign out", "sign_out"),
    ("scale up", "scale_up"),
    ("scale down", "scale_down"),
    ("set up", "setup"),
    ("sci-fi", "science fiction"),
    ("big-o", "complexity"),
)

# Groups of words that mean the same in a question; the first word stands for the group.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("remove", "delete", "erase"),
    ("create", "make", "generate", "build"),
    ("dictionary", "dict"),
    ("repository", "repo"),
    ("integer", "int"),
    ("exit", "quit", "leave"),
    ("find", "get", "obtain", "retrieve", "see", "check", "show", "display", "list", "determine"),
    ("start", "begin", "launch"),
    ("big", "large", "huge", "biggest", "largest"),
    ("small", "little", "tiny"),
    ("fast", "quick", "speedy"),
    ("update", "upgrade"),
    ("merge", "combine"),
    ("kill", "terminate", "end"),
    ("loop", "iterate"),
    ("car", "automobile"),
    ("picture", "image", "photo"),
    ("error", "exception"),
    ("benefit", "advantage"),
    ("author", "write", "wrote", "writer"),
    ("brief", "short"),
    ("sea", "ocean"),
    ("capture", "take"),
    ("suggest", "recommend"),
    ("convert", "parse", "turn", "change"),
)

NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "first": "1",
    "second": "2",
    "third": "3",
    "fourth": "4",
    "fifth": "5",
    "sixth": "6",
    "seventh": "7",
    "eighth": "8",
    "ninth": "9",
    "tenth": "10",
    "half": "0.5",
    "double": "2",
    "twice": "2",
    "once": "1",
    "dozen": "12",
}

# Verbs that carry little of a question's meaning (the object does): "make a POST request" and
# "send a POST request", or "read a CSV" and "load a CSV", ask the same. A swap between two of them
# is not a different question; a swap of a specific verb (delete/rename, reverse/shuffle) is.
GENERIC_VERBS = frozenset(
    """
    get make do see check find search look send load read open say generate create produce use run put
    take have go obtain fetch retrieve compute calculate determine print display show view know learn
    write build perform handle work set
    """.split()
)

# Words that carry no topic: question forms, pronouns, articles, prepositions, politeness.
STOPWORDS = frozenset(
    """
    a an the this that these those there here it its it's i me my mine we us our you your yours he she
    they them their what which who whom whose why when where how is are was were be been being am do
    does did doing done can could would should shall will may might must have has had having to of in
    on for with by at from into onto about as and or but if then than so such also just very really
    please kindly tell explain describe give let lets show help want need know like some any way ways
    best good most effective possible correct proper right simple simply easy easiest new own one's
    is there using use used via through within over while after before each every all other another
    mean meaning example examples thing things something someone anything someone's
    up out off again still even ever already much many more less few bit quick quickly step steps
    """.split()
)
# NOTE: negations, numbers and antonym words are compared by their own rules, so "after", "before",
# "first", "over", "up", "show", "sort" and the like in STOPWORDS only leave the *swap* rule.
