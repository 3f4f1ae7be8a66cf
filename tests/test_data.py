"Readers on fixture trees written in the real formats, text files and images as people save them, the transforms and the per-scale split."
import json, random, re, struct, warnings, zlib, pytest, numpy as np, torch
from pathlib import Path
from PIL import Image
from torch.testing import assert_close
from torch.utils.data import DataLoader
from hsvlt_lite.data import (ListFileDataset, VOC2007, COCO2014, NUSWIDE, VOC_CLASSES, COCO_CLASSES, NUS_WIDE_CLASSES, split_by_scale,
                             train_transform, eval_transform, read_text_file, text_lines, read_label_names, load_image, to_rgb,
                             check_image, check_image_files)
from hsvlt_lite.model import IMAGENET_MEAN, IMAGENET_STD

MEAN, STD = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]


def normalised(rgb): return (torch.tensor(rgb, dtype=torch.float32) / 255 - MEAN[:, 0, 0]) / STD[:, 0, 0]


# --- transforms and the per-scale split -------------------------------------------------------------------------------

def test_split_by_scale_by_hand():
    t = torch.tensor([[1., 0., 1., 1.], [0., 1., 1., 0.]])
    sizes = torch.tensor([[8., 0., 13., 32.], [0., 12.7, 20.2, 0.]])
    bands = split_by_scale(t, sizes, (12.7, 20.2))
    assert bands['small'].tolist() == [[1., 0., -1., -1.], [0., -1., -1., 0.]]
    assert bands['medium'].tolist() == [[-1., 0., 1., -1.], [0., 1., -1., 0.]]
    assert bands['large'].tolist() == [[-1., 0., -1., 1.], [0., -1., 1., 0.]]


def test_transforms_on_a_flat_colour():
    flat = torch.tensor([17, 128, 240], dtype=torch.uint8)[:, None, None].expand(3, 50, 30).contiguous()
    for tf in (train_transform(24), eval_transform(24)):
        assert_close(tf(flat), normalised([17, 128, 240])[:, None, None].expand(3, 24, 24))


def test_train_transform_flips_left_right_half_the_time():
    half = torch.zeros(3, 32, 32, dtype=torch.uint8); half[:, :, :16] = 255   # white left half
    torch.manual_seed(0)
    tf = train_transform(32)
    left_white = [bool(tf(half)[:, :, 0].mean() > 0) for _ in range(200)]
    assert 60 < sum(left_white) < 140


# --- readers on fixture trees ---------------------------------------------------------------------------------------

def jpeg(path, rgb, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', size, rgb).save(path, quality=95)


def colour_of(x): return x.mean((1, 2))


def test_list_file_dataset(tmp_path):
    jpeg(tmp_path / 'img' / 'a.jpg', (250, 0, 0)); jpeg(tmp_path / 'img' / 'b.jpg', (0, 0, 250)); jpeg(tmp_path / 'c.jpg', (0, 250, 0))
    (tmp_path / 'names.txt').write_text('cat\ndog\n\nbird\n')
    (tmp_path / 'list.txt').write_text('img/a.jpg\tdog,cat\nimg/b.jpg\t\n\nc.jpg\tbird , dog\n')
    ds = ListFileDataset(tmp_path, tmp_path / 'list.txt', tmp_path / 'names.txt', transform=eval_transform(16))
    assert ds.label_names == ['cat', 'dog', 'bird'] and len(ds) == 3
    assert ds.targets.tolist() == [[1, 1, 0], [0, 0, 0], [0, 1, 1]]
    for i, rgb in enumerate([(250, 0, 0), (0, 0, 250), (0, 250, 0)]):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and torch.equal(y, ds.targets[i])
        assert_close(colour_of(x), normalised(rgb), atol=0.05, rtol=0)
    same = ListFileDataset(tmp_path, tmp_path / 'list.txt', ['cat', 'dog', 'bird'])
    assert torch.equal(same.targets, ds.targets) and same[0][0].shape == (3, 224, 224)


def test_list_file_errors_name_the_file_and_line(tmp_path):
    jpeg(tmp_path / 'a.jpg', (9, 9, 9))
    (tmp_path / 'bad.jpg').write_bytes(b'not a jpeg')
    names = ['cat', 'dog']
    cases = {'a.jpg\tcat\na.jpg cat\n': (ValueError, r'list.txt:2: expected'),
             'a.jpg\tcat\n\na.jpg\tcat,cow\n': (ValueError, r"list.txt:3: unknown label 'cow'"),
             'a.jpg\tdog\nmissing.jpg\tdog\n': (FileNotFoundError, r'list.txt:2: image not found'),
             '\n': (ValueError, r'list.txt: no images listed')}
    for text, (err, match) in cases.items():
        (tmp_path / 'list.txt').write_text(text)
        with pytest.raises(err, match=match): ListFileDataset(tmp_path, tmp_path / 'list.txt', names)
    (tmp_path / 'list.txt').write_text('a.jpg\tcat\nbad.jpg\tdog\n')
    ds = ListFileDataset(tmp_path, tmp_path / 'list.txt', names)
    with pytest.raises(ValueError, match=r'list.txt:2: cannot read image .*bad.jpg'): ds[1]
    (tmp_path / 'names.txt').write_text('cat\ndog\ncat\n')
    with pytest.raises(ValueError, match=r"names.txt:3: label name 'cat' repeats line 1"):
        ListFileDataset(tmp_path, tmp_path / 'list.txt', tmp_path / 'names.txt')
    with pytest.raises(ValueError, match='nowhere.txt: no such file'): ListFileDataset(tmp_path, tmp_path / 'nowhere.txt', names)


def test_nuswide_list_form(tmp_path):
    jpeg(tmp_path / 'Flickr' / 'sky' / '0001_1.jpg', (0, 0, 200)); jpeg(tmp_path / 'Flickr' / 'zebra' / '0002_2.jpg', (200, 200, 200))
    (tmp_path / 'train.txt').write_text('Flickr/sky/0001_1.jpg\tclouds,sky,water\nFlickr/zebra/0002_2.jpg\tzebra,grass,animal\n')
    ds = NUSWIDE(tmp_path, tmp_path / 'train.txt', transform=eval_transform(8))
    assert ds.label_names == NUS_WIDE_CLASSES and ds.targets.shape == (2, 81)
    assert [{NUS_WIDE_CLASSES[j] for j in torch.nonzero(t).flatten()} for t in ds.targets] == [{'clouds', 'sky', 'water'}, {'zebra', 'grass', 'animal'}]
    (tmp_path / 'train.txt').write_text('Flickr/sky/0001_1.jpg\tsky,skies\n')
    with pytest.raises(ValueError, match="train.txt:1: unknown label 'skies'"): NUSWIDE(tmp_path, tmp_path / 'train.txt')


def voc_tree(root, annotations, split='trainval'):
    "Write VOCdevkit/VOC2007 under `root`: {image id: [(class, difficult), ...]} with a flat-grey JPEG each."
    voc = root / 'VOCdevkit' / 'VOC2007'
    (voc / 'Annotations').mkdir(parents=True); (voc / 'ImageSets' / 'Main').mkdir(parents=True)
    for i, (name, objects) in enumerate(annotations.items()):
        jpeg(voc / 'JPEGImages' / f'{name}.jpg', (30 * i, 30 * i, 30 * i))
        objs = ''.join(f'<object><name>{c}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>'
                       f'<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>' for c, d in objects)
        (voc / 'Annotations' / f'{name}.xml').write_text(f'<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>'
                                                         f'<size><width>40</width><height>30</height><depth>3</depth></size>{objs}</annotation>')
    (voc / 'ImageSets' / 'Main' / f'{split}.txt').write_text(''.join(f'{n}\n' for n in annotations))
    return voc


def test_voc2007_targets_with_difficult_objects_ignored(tmp_path):
    voc = voc_tree(tmp_path, {'000005': [('chair', 0), ('chair', 1), ('diningtable', 1)],
                              '000007': [('car', 0)],
                              '000009': [('person', 1), ('horse', 0), ('person', 1)],
                              '000012': []})
    ds = VOC2007(tmp_path, 'trainval', transform=eval_transform(8))
    expected = np.zeros((4, 20), np.float32)
    for row, present, ignored in [(0, ['chair'], ['diningtable']), (1, ['car'], []), (2, ['horse'], ['person']), (3, [], [])]:
        for c in present: expected[row, VOC_CLASSES.index(c)] = 1
        for c in ignored: expected[row, VOC_CLASSES.index(c)] = -1
    assert ds.label_names == VOC_CLASSES and ds.targets.tolist() == expected.tolist()
    assert_close(colour_of(ds[2][0]), normalised([60, 60, 60]), atol=0.05, rtol=0)
    assert torch.equal(VOC2007(voc, 'trainval').targets, ds.targets)     # root may be the VOC2007 folder itself


def test_voc2007_errors_name_the_file(tmp_path):
    voc = voc_tree(tmp_path, {'000001': [('dog', 0)], '000002': [('cat', 0)]}, split='test')
    (voc / 'Annotations' / '000002.xml').write_text('<annotation><object><name>cat</name></objec></annotation>')
    with pytest.raises(ValueError, match=r'000002.xml: malformed XML .*line 1'): VOC2007(voc, 'test')
    (voc / 'Annotations' / '000002.xml').write_text('<annotation><object><name>kitten</name></object></annotation>')
    with pytest.raises(ValueError, match=r"000002.xml: unknown VOC class 'kitten'"): VOC2007(voc, 'test')
    (voc / 'Annotations' / '000002.xml').unlink()
    with pytest.raises(FileNotFoundError, match=r'test.txt:2: annotation not found'): VOC2007(voc, 'test')
    (voc / 'ImageSets' / 'Main' / 'test.txt').write_text('000001\n')
    (voc / 'JPEGImages' / '000001.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=r'test.txt:1: image not found: .*000001.jpg'): VOC2007(voc, 'test')
    with pytest.raises(ValueError, match="split='val2'"): VOC2007(voc, 'val2')


COCO_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)]


def coco_tree(root, images, annotations, split='val'):
    "Write annotations/instances_{split}2014.json (the 80 real categories, in shuffled order) and the JPEGs."
    cats = [{'supercategory': 'x', 'id': i, 'name': n} for i, n in zip(COCO_IDS, COCO_CLASSES)]
    random.Random(0).shuffle(cats)
    for im in images: jpeg(root / f'{split}2014' / im['file_name'], (200, 100, 0))
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    ann = root / 'annotations' / f'instances_{split}2014.json'
    ann.write_text(json.dumps({'info': {}, 'images': images, 'categories': cats, 'annotations': annotations}, indent=1))
    return ann


def test_coco2014_maps_category_ids_in_sorted_order(tmp_path):
    images = [{'id': 42, 'file_name': 'COCO_val2014_000000000042.jpg'}, {'id': 7, 'file_name': 'COCO_val2014_000000000007.jpg'},
              {'id': 99, 'file_name': 'COCO_val2014_000000000099.jpg'}]
    anns = [{'id': 1, 'image_id': 42, 'category_id': 90, 'iscrowd': 0}, {'id': 2, 'image_id': 42, 'category_id': 1, 'iscrowd': 0},
            {'id': 3, 'image_id': 7, 'category_id': 13, 'iscrowd': 1}, {'id': 4, 'image_id': 42, 'category_id': 1, 'iscrowd': 0}]
    coco_tree(tmp_path, images, anns)
    ds = COCO2014(tmp_path, 'val', transform=eval_transform(8))
    assert ds.label_names == COCO_CLASSES and ds.targets.shape == (3, 80)
    present = [{ds.label_names[j] for j in torch.nonzero(t).flatten()} for t in ds.targets]
    assert present == [{'stop sign'}, {'person', 'toothbrush'}, set()]          # images in id order: 7, 42, 99 (no annotations)
    assert [p.name for p in ds.paths] == ['COCO_val2014_000000000007.jpg', 'COCO_val2014_000000000042.jpg', 'COCO_val2014_000000000099.jpg']
    assert_close(colour_of(ds[1][0]), normalised([200, 100, 0]), atol=0.05, rtol=0)


def test_coco2014_errors_name_the_file(tmp_path):
    images = [{'id': 1, 'file_name': 'a.jpg'}]
    coco_tree(tmp_path, images, [{'id': 5, 'image_id': 1, 'category_id': 12}])
    with pytest.raises(ValueError, match=r'instances_val2014.json: annotation 5 has unknown category id 12'): COCO2014(tmp_path)
    coco_tree(tmp_path, images, [{'id': 6, 'image_id': 2, 'category_id': 1}])
    with pytest.raises(ValueError, match=r'instances_val2014.json: annotation 6 refers to unknown image id 2'): COCO2014(tmp_path)
    ann = coco_tree(tmp_path, images, [{'id': 7, 'category_id': 1}])
    with pytest.raises(ValueError, match=r"instances_val2014.json: COCO annotations lack the key 'image_id'"): COCO2014(tmp_path)
    ann.write_text('{"images": [\n{"id": 1,}\n]}')
    with pytest.raises(ValueError, match=r'instances_val2014.json:2: not valid JSON'): COCO2014(tmp_path)
    coco_tree(tmp_path, images + [{'id': 3, 'file_name': 'gone.jpg'}], [])
    (tmp_path / 'val2014' / 'gone.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=r'instances_val2014.json \(image id 3\): image not found: .*gone.jpg'): COCO2014(tmp_path)
    with pytest.raises(ValueError, match="split='test'"): COCO2014(tmp_path, 'test')


# --- text files as people save them ---------------------------------------------------------------------------------

ENCODINGS = {'utf-8': b'', 'utf-8-bom': b'\xef\xbb\xbf', 'utf-16-le': b'\xff\xfe', 'utf-16-be': b'\xfe\xff'}


def write_text(path, text, encoding):
    path.write_bytes(ENCODINGS[encoding] + text.encode(encoding.replace('-bom', '')))
    return path


def one_line_error(f, *args):
    with pytest.raises(ValueError) as e: f(*args)
    msg = str(e.value)
    assert '\n' not in msg and msg.strip() == msg, msg
    return msg


@pytest.mark.parametrize('encoding', ENCODINGS)
@pytest.mark.parametrize('end', ['\n', '\r\n', '\r'])
def test_text_in_every_accepted_encoding_and_line_end(tmp_path, encoding, end):
    f = write_text(tmp_path / 'names.txt', end.join(['cat', '', ' Zürich ', 'naïve 🐈', '\x0cform\u2028feed', '']), encoding)
    assert text_lines(f) == [(1, 'cat'), (3, ' Zürich '), (4, 'naïve 🐈'), (5, '\x0cform\u2028feed')]   # only LF, CRLF, CR end lines
    assert read_label_names(f) == ['cat', 'Zürich', 'naïve 🐈', 'form\u2028feed']


def test_text_that_does_not_decode_names_file_line_and_column(tmp_path, monkeypatch):
    f = tmp_path / 'list.txt'
    f.write_bytes('a.jpg\tcat\r\nb.jpg\tdog\r\nc.jpg\tcafé\r\n'.encode('cp1252'))
    assert one_line_error(text_lines, f) == f"{f}:3: not UTF-8 text (byte 0xe9 at column 10); save it as UTF-8"
    f.write_bytes(b'a\rb\rc\xff\r')                                            # CR-only line ends count too
    assert one_line_error(text_lines, f) == f"{f}:3: not UTF-8 text (byte 0xff at column 2); save it as UTF-8"
    f.write_bytes('cat\ndog\n'.encode('utf-16-be'))                            # UTF-16 without a BOM
    assert one_line_error(text_lines, f) == f"{f}:1: NUL character at column 1 (UTF-16 without a byte-order mark?); save it as UTF-8"
    f.write_bytes(b'\xff\xfe\x00\x00' + 'cat'.encode('utf-32-le'))             # UTF-32: reads as UTF-16 with NULs
    assert one_line_error(text_lines, f).startswith(f"{f}:1: NUL character at column 1")
    f.write_bytes(b'\xff\xfe' + 'ok\n'.encode('utf-16-le') + b'\x00\xdc')      # a lone low surrogate on line 2
    assert one_line_error(text_lines, f) == f"{f}:2: not UTF-16 text (byte 0x00 at column 1); save it as UTF-8"
    assert one_line_error(read_text_file, tmp_path) == f"{tmp_path}: is a folder, not a text file"
    assert one_line_error(read_text_file, tmp_path / 'gone.txt') == f"{tmp_path / 'gone.txt'}: no such file"
    def denied(self): raise PermissionError(13, 'Permission denied', str(self))
    monkeypatch.setattr(Path, 'read_bytes', denied)                            # root may read anything: pretend
    assert one_line_error(read_text_file, f) == f"{f}: cannot read it (Permission denied)"


def test_empty_files_keep_their_errors(tmp_path):
    f = write_text(tmp_path / 'names.txt', '\r\n \r\n', 'utf-16-le')
    assert one_line_error(read_label_names, f) == f"{f}: no label names"
    (tmp_path / 'list.txt').write_bytes(b'\xef\xbb\xbf\n\n')
    assert one_line_error(ListFileDataset, tmp_path, tmp_path / 'list.txt', ['cat']) == f"{tmp_path / 'list.txt'}: no images listed"


def test_a_label_twice_on_one_line_counts_once(tmp_path):
    jpeg(tmp_path / 'a.jpg', (9, 9, 9))
    (tmp_path / 'list.txt').write_text('a.jpg\tcat,cat, dog ,,cat\n')
    assert ListFileDataset(tmp_path, tmp_path / 'list.txt', ['cat', 'dog', 'cow']).targets.tolist() == [[1, 1, 0]]


def test_voc_and_coco_read_text_as_people_save_it(tmp_path):
    voc = voc_tree(tmp_path / 'v', {'000001': [('dog', 0)], '000002': [('cat', 0)]}, split='val')
    write_text(voc / 'ImageSets' / 'Main' / 'val.txt', '000001\r\n\r\n000002\r\n', 'utf-16-le')
    assert VOC2007(voc, 'val').where == [f"{voc / 'ImageSets' / 'Main' / 'val.txt'}:{ln}" for ln in (1, 3)]
    assert one_line_error(VOC2007, voc, 'train') == f"{voc / 'ImageSets' / 'Main' / 'train.txt'}: no such file"
    ann = coco_tree(tmp_path / 'c', [{'id': 1, 'file_name': 'a.jpg'}], [{'id': 5, 'image_id': 1, 'category_id': 1}])
    ann.write_bytes(b'\xef\xbb\xbf' + ann.read_bytes())
    assert COCO2014(tmp_path / 'c').targets[0, 0] == 1


# --- images in any mode ---------------------------------------------------------------------------------------------

def saved(path, im, **kw):
    im.save(path, **kw)
    return path


def rgb_of(path):
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                          # no warning, for any mode
        x = load_image(path, 'list.txt:1')
    assert x.dtype == torch.uint8 and x.shape[0] == 3
    return x.permute(1, 2, 0).numpy()


def grey(rows): return np.repeat(np.array(rows, np.uint8)[..., None], 3, axis=-1)


def png16(path, values, colour_type):
    "A 16-bit PNG written by hand (PIL cannot write 16-bit RGB): colour type 0 grey, 2 RGB."
    h, w = values.shape[:2]
    raw = b''.join(b'\0' + values[y].astype('>u2').tobytes() for y in range(h))
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
    return path


def test_16_bit_and_32_bit_integer_images_are_scaled_not_clipped(tmp_path):
    v = np.array([[0, 128, 129, 385, 386], [32896, 32767, 65278, 65407, 65535]])
    expect = grey(np.floor(v / 257 + 0.5))                                      # round half up; v / 257 never ends in .5
    assert (rgb_of(png16(tmp_path / 'g.png', v, 0)) == expect).all()
    assert (rgb_of(saved(tmp_path / 'l.tif', Image.fromarray(v.astype('<u2')))) == expect).all()
    assert (rgb_of(saved(tmp_path / 'b.tif', Image.fromarray(v.astype('>u2')))) == expect).all()
    assert (rgb_of(saved(tmp_path / 'i.tif', Image.fromarray(v.astype(np.int32)))) == expect).all()
    wide = np.array([[-70000, 0, 70000, 185000]], np.int32)                     # beyond 16 bits: stretched min..max
    assert (rgb_of(saved(tmp_path / 'w.tif', Image.fromarray(wide))) == grey([[0, 70, 140, 255]])).all()
    rgb16 = np.array([[[65535, 32896, 383], [256, 255, 65407]]])               # PIL opens 16-bit RGB as 8-bit: v >> 8
    assert np.abs(rgb_of(png16(tmp_path / 'c.png', rgb16, 2)) - rgb16 / 257).max() < 1


def test_float_images(tmp_path):
    for values, rows in [([[0, .2, 1]], [[0, 51, 255]]), ([[0, 7.6, 254.2]], [[0, 8, 254]]), ([[-2, 0, 2]], [[0, 128, 255]]),
                         ([[5, 5, 5]], [[5, 5, 5]]), ([[300, 300]], [[0, 0]])]:
        assert (rgb_of(saved(tmp_path / 'f.tif', Image.fromarray(np.array(values, np.float32)))) == grey(rows)).all(), values
    saved(tmp_path / 'inf.tif', Image.fromarray(np.array([[0, np.inf]], np.float32)))
    assert one_line_error(load_image, tmp_path / 'inf.tif', 'l.txt:4') == \
        f"l.txt:4: cannot read image {tmp_path / 'inf.tif'}: ValueError: pixel values include NaN or infinity"


def composite_on_white(rgba):
    "By hand, in floats: c a / 255 + 255 (1 - a / 255), rounded."
    rgba = np.asarray(rgba, np.float64)
    return np.round(rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)).astype(np.uint8)


def test_transparency_is_composited_onto_white_without_warnings(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (7, 9, 4), dtype=np.uint8)
    assert (rgb_of(saved(tmp_path / 'a.png', Image.fromarray(rgba))) == composite_on_white(rgba)).all()
    la = rgba[..., 2:]
    assert (rgb_of(saved(tmp_path / 'la.png', Image.frombytes('LA', (9, 7), la.tobytes())))
            == composite_on_white(np.concatenate([la[..., :1]] * 3 + [la[..., 1:]], -1))).all()
    p = Image.new('P', (3, 1)); p.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255]); p.putdata([0, 1, 2])
    assert rgb_of(saved(tmp_path / 'p.png', p, transparency=1)).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]
    assert rgb_of(saved(tmp_path / 'q.png', p, transparency=bytes([255, 0, 51]))).tolist() == [[[255, 0, 0], [255, 255, 255], [204, 204, 255]]]
    assert rgb_of(saved(tmp_path / 'g.gif', p, transparency=2)).tolist() == [[[255, 0, 0], [0, 255, 0], [255, 255, 255]]]
    key = Image.new('RGB', (2, 1), (10, 20, 30)); key.putpixel((1, 0), (1, 2, 3))   # RGB with a transparent colour (tRNS)
    assert rgb_of(saved(tmp_path / 'k.png', key, transparency=(1, 2, 3))).tolist() == [[[10, 20, 30], [255, 255, 255]]]
    pa = Image.new('PA', (2, 1)); pa.putpalette([0, 0, 0, 200, 100, 0]); pa.putdata([(1, 255), (1, 0)])    # in memory only
    assert np.asarray(to_rgb(pa)).tolist() == [[[200, 100, 0], [255, 255, 255]]]


def test_other_modes_through_pil(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [10, 200, 30, 40], [0, 0, 0, 255]]], np.uint8)
    by_hand = np.round((255 - cmyk[..., :3].astype(float)) * (255 - cmyk[..., 3:].astype(float)) / 255)
    assert (rgb_of(saved(tmp_path / 'k.tif', Image.frombytes('CMYK', (4, 1), cmyk.tobytes()))) == by_hand).all()
    bits = rgb_of(saved(tmp_path / '1.png', Image.frombytes('1', (8, 2), bytes([0b10000001, 0b01111110]))))
    assert (bits == grey([[255, 0, 0, 0, 0, 0, 0, 255], [0, 255, 255, 255, 255, 255, 255, 0]])).all()
    ycc = np.array([[[100, 50, 200], [128, 128, 128], [235, 128, 128]]], np.uint8)
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    jfif = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], -1)
    got = rgb_of(saved(tmp_path / 'y.tif', Image.frombytes('YCbCr', (3, 1), ycc.tobytes())))
    assert np.abs(got.astype(int) - np.clip(np.round(jfif), 0, 255)).max() <= 1
    lum = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    assert (rgb_of(saved(tmp_path / 'l.png', Image.fromarray(lum))) == grey(lum)).all()


# --- broken and huge images -----------------------------------------------------------------------------------------

def noise_jpeg(path, seed=0, size=96):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def broken_files(tmp_path):
    good = noise_jpeg(tmp_path / 'good.jpg').read_bytes()
    png = bytearray(saved(tmp_path / 'x.png', Image.new('L', (8, 8))).read_bytes()); png[29] ^= 1     # the IHDR checksum
    noisy_png = saved(tmp_path / 'n.png', Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))).read_bytes()
    files = {'cut.jpg': good[:len(good) // 2], 'header.jpg': good[:300], 'empty.jpg': b'', 'text.png': b'hello\n',
             'crc.png': bytes(png), 'cut.png': noisy_png[:len(noisy_png) // 2]}
    for name, data in files.items(): (tmp_path / name).write_bytes(data)
    (tmp_path / 'folder.jpg').mkdir()
    return [*files, 'folder.jpg']


def test_broken_images_are_one_line_naming_file_and_list_line(tmp_path):
    for name in broken_files(tmp_path):
        for f in (load_image, check_image):
            msg = one_line_error(f, tmp_path / name, 'list.txt:12')
            assert msg.startswith(f"list.txt:12: cannot read image {tmp_path / name}: "), msg


@pytest.mark.parametrize('limit', [6000, 4000])       # PIL warns above the limit, raises above twice it
def test_decompression_bombs_are_refused_in_one_line(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', limit)
    saved(tmp_path / 'big.png', Image.new('L', (125, 80)))
    expect = f"list.txt:3: image {tmp_path / 'big.png'} has 10,000 pixels, more than PIL's limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS)"
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert one_line_error(load_image, tmp_path / 'big.png', 'list.txt:3') == expect
        assert one_line_error(check_image_files, [tmp_path / 'big.png'], ['list.txt:3'], 2) == expect
    saved(tmp_path / 'ok.png', Image.new('L', (50, 40)))
    assert load_image(tmp_path / 'ok.png', 'x').shape == (3, 40, 50)


# --- the check before training, and errors from DataLoader workers ------------------------------------------------------

def listed(tmp_path, names):
    (tmp_path / 'list.txt').write_text(''.join(f'{n}\tcat\n' for n in names))
    return ListFileDataset(tmp_path, tmp_path / 'list.txt', ['cat'], transform=eval_transform(16))


@pytest.mark.parametrize('workers', [1, 3, 8])
def test_check_images_reports_the_first_bad_file_in_list_order(tmp_path, workers):
    bad = broken_files(tmp_path)
    bad.remove('folder.jpg')                                                    # a folder is 'image not found' when the dataset is built
    good = [noise_jpeg(tmp_path / f'{i}.jpg', i).name for i in range(40)]
    assert listed(tmp_path, good).check_images(workers) is None
    for name in bad:
        names = good[:25] + [name] + good[25:] + ['cut.jpg']
        with pytest.raises(ValueError, match=f'^{re.escape(str(tmp_path / "list.txt"))}:26: cannot read image .*{re.escape(name)}: '):
            listed(tmp_path, names).check_images(workers)


def test_check_image_files_in_batches(tmp_path):
    paths = [noise_jpeg(tmp_path / f'{i}.jpg', i, 16) for i in range(10)]
    (tmp_path / '7.jpg').write_bytes(b'')
    with pytest.raises(ValueError, match=r'^l:8: cannot read image .*7\.jpg'):
        check_image_files(paths, [f'l:{i + 1}' for i in range(10)], workers=2, batch=3)


def test_dataloader_worker_errors_end_with_the_file_and_line(tmp_path):
    noise_jpeg(tmp_path / 'a.jpg'); (tmp_path / 'bad.jpg').write_bytes(b'not a jpeg')
    ds = listed(tmp_path, ['a.jpg', 'bad.jpg'])
    with pytest.raises(ValueError) as e:
        for _ in DataLoader(ds, batch_size=1, num_workers=1): pass
    lines = [l for l in str(e.value).splitlines() if l.strip()]
    assert 'DataLoader worker' in lines[0] and len(lines) > 1
    assert f"{tmp_path / 'list.txt'}:2: cannot read image {tmp_path / 'bad.jpg'}" in lines[-1]
