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
    ("often", "frequently"),
    ("far", "distant"),
    ("slow", "sluggish"),
    ("manual", "guide", "handbook"),
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

# Idioms rewritten before anything else (lower case; matched on word boundaries). They hold words
# that look like numbers or negations but are neither ("once in a while", "first of all", "no longer"),
# or negations spelled as verbs ("fails to start" = "does not start").
IDIOMS: tuple[tuple[str, str], ...] = (
    ("every once in a while", "occasionally"),
    ("once in a while", "occasionally"),
    ("at once", "immediately"),
    ("all at once", "immediately"),
    ("first of all", ""),
    ("first and foremost", ""),
    ("to begin with", ""),
    ("to start with", ""),
    ("for the first time", "initially"),
    ("every other", "every second"),
    ("a single", "a"),
    ("one single", "a"),
    ("no longer", "stopped"),
    ("not only", ""),
    ("no matter", ""),
    ("no idea", "unsure"),
    ("not sure", "unsure"),
    ("did not know", "unsure"),
    ("do not know", "unsure"),
    ("does not know", "unsure"),
    ("not familiar with", "unsure about"),
    ("fails to", "does not"),
    ("failed to", "did not"),
    ("fail to", "do not"),
    ("failing to", "not"),
    ("unable to", "not able to"),
    ("except for", "except"),
    ("apart from", "except"),
    ("other than", "except"),
    ("excluding", "except"),
    ("power on", "enable"),
    ("power off", "disable"),
    ("power up", "enable"),
    ("power down", "disable"),
)

# Contractions written without their apostrophe ("cant", "doesnt"). "wont" is read as "will not".
BARE_CONTRACTIONS = frozenset(
    "cant dont doesnt didnt isnt arent wasnt werent wont wouldnt couldnt shouldnt havent hasnt hadnt".split()
)

# Particles that reverse a particle verb: "power on"/"power off", "log in"/"log out",
# "round up"/"round down", "check in"/"check out". Compared only when the verb before them is the same.
PARTICLE_PAIRS: tuple[tuple[str, str], ...] = (("on", "off"), ("in", "out"), ("up", "down"))

# Words that place a value on a scale; two prompts must carry the same ones (after stemming). A
# superlative or comparative that one prompt has and the other lacks changes the question
# ("which planet has moons" / "which planet has the most moons").
SCALAR_WORDS = frozenset(
    """
    most least fewest fewer more less max min maximum minimum highest lowest largest smallest biggest
    top bottom oldest newest youngest latest earliest longest shortest fastest slowest cheapest dearest
    closest nearest farthest furthest heaviest lightest hottest coldest warmest coolest
    """.split()
)

# Words that place a value on a scale without being opposites of anything the other prompt says;
# with SCALAR_WORDS and the superlatives they make a prompt "scaled".
SCALE_MARKERS = frozenset("last latest recent".split())

# Words ending in -est that are not superlatives (the -est/-most suffix marks a scale otherwise).
NOT_SUPERLATIVE = frozenset(
    """
    best test request interest forest guest suggest digest manifest contest invest honest modest harvest
    protest west rest nest chest quest priest arrest attest latest manifest conquest inquest pest vest
    crest zest fest lest unrest backtest pretest retest unittest pytest jest almost utmost
    """.split()
)

# Units: a number followed by one of them is compared as a quantity in a base unit, so "2 hours" and
# "120 minutes", or "1 GB" and "1024 MB", are one quantity.
UNITS: dict[str, tuple[str, float]] = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), ("s", 0.001)),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), ("s", 1.0)),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), ("s", 60.0)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), ("s", 3600.0)),
    **dict.fromkeys(("day", "days"), ("s", 86400.0)),
    **dict.fromkeys(("week", "weeks"), ("s", 604800.0)),
    **dict.fromkeys(("b", "byte", "bytes"), ("B", 1.0)),
    **dict.fromkeys(("kb", "kib", "kilobyte", "kilobytes"), ("B", 1024.0)),
    **dict.fromkeys(("mb", "mib", "megabyte", "megabytes"), ("B", 1024.0**2)),
    **dict.fromkeys(("gb", "gib", "gigabyte", "gigabytes"), ("B", 1024.0**3)),
    **dict.fromkeys(("tb", "tib", "terabyte", "terabytes"), ("B", 1024.0**4)),
    **dict.fromkeys(("m", "metre", "metres", "meter", "meters"), ("m", 1.0)),
    **dict.fromkeys(("km", "kilometre", "kilometres", "kilometer", "kilometers"), ("m", 1000.0)),
    **dict.fromkeys(("cm", "centimetre", "centimetres", "centimeter", "centimeters"), ("m", 0.01)),
    **dict.fromkeys(("mm", "millimetre", "millimetres", "millimeter", "millimeters"), ("m", 0.001)),
    **dict.fromkeys(("%", "percent", "per cent"), ("%", 1.0)),
}

# Words after which the next word is a verb in its own slot ("how do I *move*", "who *invented*",
# "should … be *replaced*"). Two prompts that differ in one verb there, and in nothing else, are read
# as synonyms (move/migrate, book/reserve) unless the verbs are opposites or one is a scalar.
# "so"/"too"/"very" open an adjective slot ("so slow" / "so sluggish"), read the same way.
VERB_SLOT_BEFORE = frozenset("i you we to be please let lets will can should must so too very".split())
WH_WORDS = frozenset("who what which".split())
# Words that open a noun phrase: a verb is not preceded by one, and is often followed by one.
DETERMINERS = frozenset("the a an their its my your our his her this that these those some any".split())
# Auxiliaries that, right after a wh-word, make the next noun phrase the subject ("who did Plato
# teach" against "who taught Plato").
DO_SUPPORT = frozenset("do does did will would can could should".split())
# Prepositions that mark a role (source, target, comparison); kept in the order sequence.
# Copulas are kept too: "hours ahead of London is Tokyo" against "… of Tokyo is London".
ROLE_WORDS = frozenset("from to into onto than of over under is are was were".split())
# Words that make a relation symmetric: "the difference between A and B" asks the same as "B and A".
SYMMETRIC_WORDS = frozenset(
    "and or vs versus between both either compare compared comparison differ difference".split()
)

# Opposite actions and opposite ends of a scale, beyond ANTONYM_PAIRS: the polarity lexicon the
# relaxed verb slot relies on (a verb swap in that slot passes unless the verbs are listed here, in
# ANTONYM_PAIRS, or one negates the other by a prefix).
POLARITY_PAIRS: tuple[tuple[str, str], ...] = tuple(
    tuple(pair.split("/"))  # type: ignore[misc]
    for pair in """
    heat/cool heating/cooling warm/cool freeze/thaw freeze/melt join/leave enter/exit arrive/depart
    arrival/departure contract/relax contract/expand tighten/loosen widen/narrow grow/shrink enlarge/shrink
    inflate/deflate rise/fall raise/lower lift/lower climb/descend ascend/descend hire/fire promote/demote
    approve/reject accept/decline gain/lose borrow/lend lend/borrow buy/sell deposit/withdraw credit/debit
    import/export incoming/outgoing inbound/outbound ingress/egress inhale/exhale plant/harvest
    commit/rollback apply/revert do/undo redo/undo merge/split split/join assemble/disassemble
    bind/unbind wrap/unwrap pack/unpack indent/dedent insert/remove append/remove push/pop
    enqueue/dequeue attach/remove install/remove boot/shutdown start/shutdown start/finish online/offline
    activate/deactivate arm/disarm charge/discharge plug/unplug follow/unfollow block/unblock ban/unban
    mute/unmute pin/unpin archive/unarchive hide/unhide hide/reveal tie/untie cordon/uncordon
    mark/unmark select/deselect check/uncheck star/unstar like/unlike favorite/unfavorite
    sunrise/sunset dawn/dusk morning/evening day/night summer/winter spring/autumn
    north/south east/west northern/southern eastern/western northernmost/southernmost
    easternmost/westernmost upper/lower upstream/downstream
    early/late earlier/later earliest/latest past/future yesterday/tomorrow previous/next
    old/new older/newer oldest/newest young/old younger/older youngest/oldest long/short longer/shorter
    longest/shortest tall/short taller/shorter tallest/shortest wide/narrow thick/thin heavy/light
    heavier/lighter heaviest/lightest hard/soft strong/weak rich/poor cheap/expensive cheapest/dearest
    cheaper/dearer high/low higher/lower highest/lowest fast/slow faster/slower fastest/slowest
    near/far nearer/farther closer/farther closest/farthest nearest/farthest closest/furthest
    nearest/furthest still/stop hot/cold hotter/colder hottest/coldest warmest/coldest wet/dry full/empty
    most/least most/fewest more/less more/fewer overestimate/underestimate overflow/underflow over/under
    plus/minus multiply/divide profit/loss income/expense asset/liability buyer/seller
    employer/employee predecessor/successor precede/succeed leader/follower sender/receiver
    source/target source/destination primary/replica primary/secondary internal/external local/remote
    permit/deny allowlist/denylist whitelist/blacklist legal/illegal safe/unsafe healthy/unhealthy
    pass/fail overestimate/underestimate serial/parallel sequential/parallel static/dynamic
    mutable/immutable strict/lenient compile/decompile marshal/unmarshal light/dark black/white
    solid/liquid acidic/alkaline male/female mother/father husband/wife
    suspend/resume approve/deny increase/lower give/take charge/refund wake/sleep hibernate/wake
    attack/defend reward/punish praise/criticize love/hate appear/disappear confirm/cancel
    enroll/withdraw speed/slow accelerate/decelerate inflow/outflow borrow/return
    """.split()
)

# Verbs that each name one specific operation. In the verb slot, two of them are two different
# questions (install / configure Redis, delete / rename a branch); a verb outside this list against
# another verb there is read as a synonym (move / migrate, reboot / restart, book / reserve).
DISTINCT_ACTIONS = frozenset(
    """
    install uninstall configure update deploy build test debug run start stop restart delete rename copy
    move create backup restore download upload read write sort filter reverse shuffle encrypt decrypt
    compress sign merge split clone fork rebase commit push pull export import open close edit view print
    parse format validate monitor scale patch reset revert kill cancel schedule approve submit cook bake
    grill fry boil roast wash paint buy sell rent learn teach search count compare join
    mount format share hide lock encode decode translate summarize train plant list
    """.split()
)

# Classes of words that name distinct things of one kind: two members are never interchangeable,
# however close an embedder places them (CPU / memory usage, rows / columns, day / week).
DISTINCT_CLASSES: tuple[frozenset[str], ...] = (
    frozenset("cpu cpus processor memory ram disk disks storage gpu gpus network bandwidth swap io".split()),
    frozenset("row rows column columns cell cells table tables field fields".split()),
    frozenset("day days week weeks month months year years hour hours minute minutes second seconds".split()),
)
