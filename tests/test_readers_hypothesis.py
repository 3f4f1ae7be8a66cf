"Property-based tests of the text readers: label-name files and list files in every accepted encoding and line end, good and bad."
import tempfile, warnings, numpy as np, pytest
from pathlib import Path
from hypothesis import given, settings, strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image
from hsvlt_lite.data import read_label_names, ListFileDataset

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / 'hsvlt_lite_hypothesis')    # its caches outside the repository
FAST = settings(max_examples=150, deadline=None, database=None)

ENCODINGS = [('utf-8', b''), ('utf-8', b'\xef\xbb\xbf'), ('utf-16-le', b'\xff\xfe'), ('utf-16-be', b'\xfe\xff')]
ENDS = st.sampled_from(['\n', '\r\n', '\r'])
BLANK = st.sampled_from(['', ' ', '\t', ' \t  ', '\x0c', '\u3000'])
# no line ends or NUL in a line; no lone surrogates (not text); no U+FEFF (at the start of a file it is taken for a BOM);
# no tab or comma in a name: they separate a list line's path and labels (a name holding one is refused, tested below)
CHARS = st.characters(blacklist_categories=('Cs',), blacklist_characters='\n\r\x00\ufeff,\t')
NAME = st.text(CHARS, min_size=1, max_size=12).map(str.strip).filter(bool)
SEPARATORS = {',': 'a comma', '\t': 'a tab'}
LABEL = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\n\r\x00\ufeff,\t'), min_size=1, max_size=10) \
          .map(str.strip).filter(bool)
IMAGES = ['a.jpg', 'b c.jpg', 'ünï/ço.png', 'x,y.jpg', 'd/e f.jpeg']


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('readers')
    for name in IMAGES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (2, 2)).save(root / name)
    return root


@st.composite
def text_file(draw, lines, mixed_ends=False):
    "`lines` with blank lines sprinkled in, as the bytes of a file in an accepted encoding: (bytes, line number of each of `lines`)."
    out, numbers = [], []
    for line in lines:
        out += draw(st.lists(BLANK, max_size=2))
        out.append(line); numbers.append(len(out))
    out += draw(st.lists(BLANK, max_size=2))
    end = draw(ENDS)
    ends = [draw(ENDS) if mixed_ends else end for _ in out]
    if draw(st.booleans()): ends[-1] = ''                                       # no line end after the last line
    encoding, bom = draw(st.sampled_from(ENCODINGS))
    return bom + ''.join(l + e for l, e in zip(out, ends)).encode(encoding), numbers


def one_line(e):
    msg = str(e.value)
    assert '\n' not in msg and '\r' not in msg, msg
    return msg


# --- label-name files ------------------------------------------------------------------------------------------------

@FAST
@given(data=st.data(), names=st.lists(NAME, min_size=1, max_size=8, unique=True), mixed=st.booleans())
def test_label_names_read_back_exactly(folder, data, names, mixed):
    raw, _ = data.draw(text_file([data.draw(st.sampled_from(['', ' ', '\t'])) + n + data.draw(st.sampled_from(['', '  '])) for n in names], mixed))
    (folder / 'names.txt').write_bytes(raw)
    assert read_label_names(folder / 'names.txt') == names


@FAST
@given(data=st.data(), names=st.lists(NAME, min_size=1, max_size=8, unique=True))
def test_a_repeated_label_name_is_one_line_naming_the_line(folder, data, names):
    first = data.draw(st.integers(0, len(names) - 1))
    again = data.draw(st.integers(first + 1, len(names)))
    lines = names[:again] + [' ' + names[first]] + names[again:]
    raw, numbers = data.draw(text_file(lines))
    f = folder / 'names.txt'; f.write_bytes(raw)
    with pytest.raises(ValueError) as e: read_label_names(f)
    assert one_line(e) == f"{f}:{numbers[again]}: label name {names[first]!r} repeats line {numbers[first]}"


@FAST
@given(data=st.data(), names=st.lists(NAME, min_size=1, max_size=6, unique=True), bad=st.integers(0x80, 0xff))
def test_bytes_that_are_not_utf8_name_line_and_column(folder, data, names, bad):
    row = data.draw(st.integers(0, len(names) - 1))
    name = names[row]
    column = data.draw(st.integers(0, len(name)))                              # characters before the bad byte
    end = data.draw(ENDS)
    raw = b''.join((n.encode() if i != row else name[:column].encode() + bytes([bad]) + name[column:].encode()) + end.encode()
                   for i, n in enumerate(names))
    f = folder / 'names.txt'; f.write_bytes(raw)
    with pytest.raises(ValueError) as e: read_label_names(f)
    assert one_line(e) == f"{f}:{row + 1}: not UTF-8 text (byte 0x{bad:02x} at column {column + 1}); save it as UTF-8"


@FAST
@given(data=st.data(), names=st.lists(NAME, min_size=1, max_size=6, unique=True), sep=st.sampled_from(sorted(SEPARATORS)))
def test_a_label_name_holding_a_separator_is_refused_with_its_line(folder, data, names, sep):
    at = data.draw(st.integers(0, len(names)))
    bad = data.draw(NAME) + sep + data.draw(NAME)                               # inside the name: the ends are stripped
    lines = names[:at] + [bad] + names[at:]
    raw, numbers = data.draw(text_file(lines))
    f = folder / 'names.txt'; f.write_bytes(raw)
    with pytest.raises(ValueError) as e: read_label_names(f)
    assert one_line(e) == f"{f}:{numbers[at]}: label name {bad!r} contains {SEPARATORS[sep]}, which separates a list file's labels, so no list line could name it"
    (folder / 'list.txt').write_text('a.jpg\t\n')
    with pytest.raises(ValueError) as e: ListFileDataset(folder, folder / 'list.txt', lines)
    assert one_line(e).startswith(f"label_names[{at}]: label name {bad!r} contains {SEPARATORS[sep]}")


# --- list files ------------------------------------------------------------------------------------------------------

@st.composite
def list_line(draw, names):
    "A valid list line: (the line, its image, the set of its labels)."
    path = draw(st.sampled_from(IMAGES))
    labels = draw(st.lists(st.sampled_from(names), max_size=2 * len(names)))   # repeats allowed: they count once
    items = [draw(st.sampled_from(['', ' ', '  '])) + l + draw(st.sampled_from(['', ' '])) for l in labels]
    if draw(st.booleans()): items.insert(draw(st.integers(0, len(items))), '')   # an empty item: ',,'
    return draw(st.sampled_from(['', ' '])) + path + draw(st.sampled_from(['', ' '])) + '\t' + ','.join(items), path, set(labels)


def expected_targets(rows, names):
    "The target matrix built by hand: 1 where a row lists the name."
    t = np.zeros((len(rows), len(names)), np.float32)
    for i, (_, _, labels) in enumerate(rows):
        for label in labels: t[i, names.index(label)] = 1
    return t


@FAST
@given(data=st.data(), names=st.lists(LABEL, min_size=1, max_size=6, unique=True), as_file=st.booleans())
def test_valid_list_lines_give_the_right_targets(folder, data, names, as_file):
    rows = data.draw(st.lists(list_line(names), min_size=1, max_size=8, unique_by=lambda r: r[1]))
    raw, numbers = data.draw(text_file([line for line, _, _ in rows]))
    (folder / 'list.txt').write_bytes(raw)
    if as_file: (folder / 'names.txt').write_bytes(data.draw(text_file(names))[0])
    ds = ListFileDataset(folder, folder / 'list.txt', folder / 'names.txt' if as_file else names)
    assert ds.label_names == names
    assert ds.targets.numpy().tolist() == expected_targets(rows, names).tolist()
    assert ds.paths == [folder / p for _, p, _ in rows]
    assert ds.where == [f"{folder / 'list.txt'}:{n}" for n in numbers]


@st.composite
def bad_line(draw, names):
    "A malformed list line: no tab, two tabs, an empty path or an unknown label."
    line, path, labels = draw(list_line(names))
    kind = draw(st.sampled_from(['no tab', 'two tabs', 'empty path', 'unknown label']))
    if kind == 'no tab': return line.replace('\t', draw(st.sampled_from(['', ' ', ',', '  '])))
    if kind == 'two tabs': return line + '\t' + draw(st.sampled_from(['', names[0], ' ']))
    if kind == 'empty path': return draw(st.sampled_from(['', ' ', '  '])) + '\t' + (line.partition('\t')[2] + ',' + names[0]).lstrip(',')  # a line of only tabs and spaces is blank
    unknown = draw(LABEL.filter(lambda l: l not in names))
    items = [l for l in line.partition('\t')[2].split(',')]
    items.insert(draw(st.integers(0, len(items))), unknown)
    return path + '\t' + ','.join(items)


@settings(max_examples=250, deadline=None, database=None)
@given(data=st.data(), names=st.lists(LABEL, min_size=1, max_size=6, unique=True))
def test_malformed_list_lines_are_one_line_naming_file_and_line(folder, data, names):
    rows = [line for line, _, _ in data.draw(st.lists(list_line(names), max_size=5, unique_by=lambda r: r[1]))]
    at = data.draw(st.integers(0, len(rows)))
    rows.insert(at, data.draw(bad_line(names)))
    raw, numbers = data.draw(text_file(rows))
    (folder / 'list.txt').write_bytes(raw)
    with pytest.raises(ValueError) as e: ListFileDataset(folder, folder / 'list.txt', names)
    assert one_line(e).startswith(f"{folder / 'list.txt'}:{numbers[at]}: ")


@FAST
@given(data=st.data(), names=st.lists(LABEL, min_size=1, max_size=6, unique=True))
def test_an_image_listed_again_is_kept_once_with_its_labels_or_refused_with_other_labels(folder, data, names):
    rows = data.draw(st.lists(list_line(names), min_size=1, max_size=5, unique_by=lambda r: r[1]))
    first = data.draw(st.integers(0, len(rows) - 1))
    _, path, labels = rows[first]
    again = data.draw(list_line(names).filter(lambda r: r[1] == path))           # the same image, labels drawn afresh
    at = data.draw(st.integers(first + 1, len(rows)))
    lines = [line for line, _, _ in rows]
    lines.insert(at, again[0])
    raw, numbers = data.draw(text_file(lines))
    (folder / 'list.txt').write_bytes(raw)
    here = f"{folder / 'list.txt'}:{numbers[at]}"
    if again[2] != labels:
        with pytest.raises(ValueError) as e: ListFileDataset(folder, folder / 'list.txt', names)
        assert one_line(e).startswith(f"{here}: {path!r} is listed again with other labels than on line {numbers[first]} (")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ds = ListFileDataset(folder, folder / 'list.txt', names)
    assert [str(w.message) for w in caught] == [f"{here}: {path!r} is listed again with the labels of line {numbers[first]}: kept once"]
    assert ds.paths == [folder / p for _, p, _ in rows] and ds.targets.numpy().tolist() == expected_targets(rows, names).tolist()
