import pytest

from preprocessing import toyota


def test_thirty_one_classes_in_fixed_order():
    assert len(toyota.CLASSES) == 31 == toyota.NUM_CLASSES
    assert len(set(toyota.CLASSES)) == 31
    assert toyota.CLASSES[0] == "Cook.Cleandishes" and toyota.CLASSES[-1] == "WatchTV"
    assert toyota.CLASSES.index("Drink.Fromcup") == 8


def test_parse_clip_name():
    clip = toyota.parse_clip_name("Cook.Cut_p02_r00_v02_c03.mp4")
    assert clip == toyota.ToyotaClip(id="Cook.Cut_p02_r00_v02_c03", activity="Cook.Cut", label=2, subject=2,
                                     take=0, view=2, camera=3)
    assert toyota.clip_name("Cook.Cut", 2, 0, 2, 3) == clip.id


@pytest.mark.parametrize("name, message", [
    ("Cook.Cut_p02_r00_v02.mp4", "does not match"),
    ("Dance_p02_r00_v02_c03.mp4", "unknown activity 'Dance'"),
    ("../Cook.Cut_p02_r00_v02_c03.mp4", "does not match"),
])
def test_bad_names_fail_naming_the_file(name, message):
    with pytest.raises(ValueError, match=f"videos/{name.replace('.', '[.]')}: .*{message}"):
        toyota.parse_clip_name(name, where=f"videos/{name}")


@pytest.mark.parametrize("subject, camera, member_of", [
    (3, 1, {"cs-train", "cv1-train", "cv2-train"}),
    (25, 2, {"cs-train", "cv1-test", "cv2-test"}),
    (2, 3, {"cs-test", "cv2-train"}),
    (18, 5, {"cs-test"}),  # camera 5 is the cross-view validation camera: in no CV split here
    (5, 7, {"cs-test", "cv2-train"}),
])
def test_splits(subject, camera, member_of):
    clip = toyota.parse_clip_name(toyota.clip_name("Walk", subject, 1, camera, camera))
    assert {s for s in toyota.SPLITS if toyota.in_split(clip, s)} == member_of
    with pytest.raises(ValueError, match="unknown Toyota split"):
        toyota.in_split(clip, "cv3-train")


def test_list_clips(tmp_path):
    for name in ("Walk_p03_r00_v01_c01.mp4", "Enter_p02_r01_v02_c02.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [c.id for c, _ in toyota.list_clips(tmp_path, "cs-train")] == ["Walk_p03_r00_v01_c01"]
    assert [c.id for c, _ in toyota.list_clips(tmp_path)] == ["Enter_p02_r01_v02_c02", "Walk_p03_r00_v01_c01"]
    (tmp_path / "Walk_p3.mp4").write_bytes(b"x")
    with pytest.raises(ValueError, match="Walk_p3.mp4"):
        toyota.list_clips(tmp_path)


def test_protocol_class_lists():
    assert toyota.protocol_classes("cs-train") == toyota.protocol_classes(None) == toyota.CLASSES
    assert toyota.protocol_classes("cv1-test") == toyota.protocol_classes("cv2-train") == toyota.CROSS_VIEW_CLASSES
    assert toyota.CROSS_VIEW_CLASSES == (
        "Cutbread", "Drink.Frombottle", "Drink.Fromcan", "Drink.Fromcup", "Drink.Fromglass", "Eat.Attable",
        "Eat.Snack", "Enter", "Getup", "Leave", "Pour.Frombottle", "Pour.Fromcan", "Readbook", "Sitdown",
        "Takepills", "Uselaptop", "Usetablet", "Usetelephone", "Walk")
    clip = toyota.parse_clip_name("Walk_p03_r00_v01_c01.mp4", classes=toyota.CROSS_VIEW_CLASSES)
    assert clip.label == 18 and toyota.parse_clip_name("Walk_p03_r00_v01_c01.mp4").label == 29
    with pytest.raises(toyota.UnknownActivity, match="unknown activity 'Cook.Cut'; expected one of the 19"):
        toyota.parse_clip_name("Cook.Cut_p03_r00_v01_c01.mp4", classes=toyota.CROSS_VIEW_CLASSES)


def test_scan_clips_rejects_activities_outside_the_protocol(tmp_path):
    names = ("Walk_p03_r00_v01_c01.mp4", "Pour.Fromcup_p03_r01_v01_c01.mp4", "Cook.Cut_p03_r02_v01_c01.mp4")
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    clips, rejected = toyota.scan_clips(tmp_path, "cv1-train")
    assert [(c.id, c.label) for c, _ in clips] == [("Walk_p03_r00_v01_c01", 18)]
    assert [(i, r.split(":")[0]) for i, _, r in rejected] == [("Cook.Cut_p03_r02_v01_c01", "unknown_activity"),
                                                              ("Pour.Fromcup_p03_r01_v01_c01", "unknown_activity")]
    clips, rejected = toyota.scan_clips(tmp_path, "cs-train")
    assert [c.id for c, _ in clips] == ["Cook.Cut_p03_r02_v01_c01", "Walk_p03_r00_v01_c01"]
    assert [i for i, _, _ in rejected] == ["Pour.Fromcup_p03_r01_v01_c01"]
    with pytest.raises(ValueError, match="Pour.Fromcup_p03_r01_v01_c01.mp4: unknown activity 'Pour.Fromcup'"):
        toyota.list_clips(tmp_path, "cs-train")


def test_scan_clips_finds_sub_folders_and_upper_case(tmp_path):
    (tmp_path / "cam1" / ".hidden").mkdir(parents=True)
    (tmp_path / "cam1" / "Walk_p03_r00_v01_c01.mp4").write_bytes(b"x")
    (tmp_path / "Enter_p03_r01_v01_c01.MP4").write_bytes(b"x")
    (tmp_path / "cam1" / ".hidden" / "Leave_p03_r01_v01_c01.mp4").write_bytes(b"x")
    clips, _ = toyota.scan_clips(tmp_path)
    assert [(c.id, p.name) for c, p in clips] == [("Enter_p03_r01_v01_c01", "Enter_p03_r01_v01_c01.MP4"),
                                                  ("Walk_p03_r00_v01_c01", "Walk_p03_r00_v01_c01.mp4")]
    (tmp_path / "Walk_p03_r00_v01_c01.mp4").write_bytes(b"x")
    with pytest.raises(ValueError, match="clip Walk_p03_r00_v01_c01 is also at"):
        toyota.scan_clips(tmp_path)
