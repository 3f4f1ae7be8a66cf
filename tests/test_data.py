"Readers on fixture trees written in the real formats, the transforms and the per-scale split."
import json, random, pytest, numpy as np, torch
from PIL import Image
from torch.testing import assert_close
from hsvlt_lite.data import (ListFileDataset, VOC2007, COCO2014, NUSWIDE, VOC_CLASSES, COCO_CLASSES, NUS_WIDE_CLASSES, split_by_scale,
                             train_transform, eval_transform)
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
    with pytest.raises(FileNotFoundError, match='nowhere.txt'): ListFileDataset(tmp_path, tmp_path / 'nowhere.txt', names)


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
