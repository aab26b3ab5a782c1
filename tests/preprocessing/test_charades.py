import pytest

from preprocessing import charades

HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
ROWS = (
    '46GP8,HR43,Kitchen,6,7,Yes,"A person cooks, then eats.",food;dish,"Cooks, eats.",'
    '"c092 11.90 21.20;c147 0.00 12.60",24.83\n'
    'N11GT,0KZ7,"Stairs",6,7,Yes,"Someone walks\nup the stairs",,"desc, with comma",,18.33\n'
    'ZZXQF,6RE8,Bedroom,5,7,Yes,script,,desc,c156 1.00 2.50,30.00\n'
)


def test_reads_the_distributed_format(tmp_path):
    path = tmp_path / "Charades_v1_train.csv"
    path.write_text(HEADER + ROWS)
    videos = charades.read_annotations(path)
    assert [v.id for v in videos] == ["46GP8", "N11GT", "ZZXQF"]
    assert videos[0].actions == (charades.Action(92, 11.9, 21.2), charades.Action(147, 0.0, 12.6))
    assert videos[0].length == pytest.approx(24.83)
    assert videos[1].actions == ()  # empty actions field
    assert videos[1].scene == "Stairs"
    assert videos[2].actions == (charades.Action(156, 1.0, 2.5),)


@pytest.mark.parametrize("bad_row, message", [
    ('BADX1,S,K,6,7,Yes,s,,d,"c092 11.90",10\n', "malformed action"),
    ('BADX2,S,K,6,7,Yes,s,,d,"c092 3.0 1.0",10\n', "start <= end"),
    ('BADX3,S,K,6,7,Yes,s,,d,"c157 1.0 2.0",10\n', "outside the 157 classes"),
    ('../etc,S,K,6,7,Yes,s,,d,,10\n', "unsafe video id"),
    ('/abs/path,S,K,6,7,Yes,s,,d,,10\n', "unsafe video id"),
    ('BADX4,S,K,6,7,Yes,s,,d\n', "9 fields, expected 11"),
    ('46GP8,S,K,6,7,Yes,s,,d,,10\n', "duplicate id '46GP8' (first on line 2)"),
])
def test_errors_name_file_and_line(tmp_path, bad_row, message):
    path = tmp_path / "Charades_v1_test.csv"
    path.write_text(HEADER + ROWS + bad_row)
    # ROWS span four lines after the header (a quoted field holds a newline): the bad row is line 6.
    with pytest.raises(ValueError, match=f"{path}:6: .*{message}".replace("(", r"\(").replace(")", r"\)")):
        charades.read_annotations(path)


def test_wrong_header_is_rejected(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,actions\nX,\n")
    with pytest.raises(ValueError, match=f"{path}:1: header"):
        charades.read_annotations(path)


def test_classes_file(tmp_path):
    path = tmp_path / "Charades_v1_classes.txt"
    charades.write_classes(path, ["Holding some clothes", "Putting clothes somewhere"])
    assert charades.read_classes(path) == [("c000", "Holding some clothes"),
                                           ("c001", "Putting clothes somewhere")]
    path.write_text("c000 Holding some clothes\nc002 Skipped one\n")
    with pytest.raises(ValueError, match=f"{path}:2: class c002 out of order"):
        charades.read_classes(path)
    path.write_text("c000\n")
    with pytest.raises(ValueError, match=f"{path}:1: expected 'cNNN Class name'"):
        charades.read_classes(path)


def test_write_then_read_round_trip(tmp_path):
    videos = [charades.CharadesVideo("AB12C", (charades.Action(3, 0.5, 2.25),), 4.0, "Kitchen", "S01")]
    charades.write_annotations(tmp_path / "x.csv", videos, scripts={"AB12C": "Some, text"})
    assert charades.read_annotations(tmp_path / "x.csv", num_classes=10) == videos
