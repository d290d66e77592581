from __future__ import annotations

import pytest

from omnipress.eeg.annotations import (
    detect_format,
    is_seizure_description,
    load_annotations,
    merge_intervals,
    read_annotations,
    read_chbmit_summary,
    read_helsinki_csv,
    read_plain_csv,
    read_tusz_csv,
    recording_id,
    seizures_from_events,
)

CHBMIT_SUMMARY = """Data Sampling Rate: 256 Hz
*************************

Channels in EDF Files:
**********************
Channel 1: FP1-F7
Channel 2: F7-T7

File Name: chb01_01.edf
File Start Time: 11:42:54
File End Time: 12:42:54
Number of Seizures in File: 0

File Name: chb01_03.edf
File Start Time: 13:43:04
File End Time: 14:43:04
Number of Seizures in File: 1
Seizure Start Time: 2996 seconds
Seizure End Time: 3036 seconds

File Name: chb01_04.edf
File Start Time: 14:43:12
File End Time: 15:43:12
Number of Seizures in File: 2
Seizure 1 Start Time: 1467 seconds
Seizure 1 End Time: 1494 seconds
Seizure 2 Start Time: 1732 seconds
Seizure 2 End Time: 1772 seconds
"""

TUSZ_CSV_BI = """# version = csv_v1.0.0
# bname = aaaaaajy_s001_t000
# duration = 1750.0000 secs
# montage_file = nedc_eas_default_montage.txt
#
channel,start_time,stop_time,label,confidence
TERM,0.0000,42.2786,bckg,1.0000
TERM,42.2786,81.7760,seiz,1.0000
TERM,81.7760,1750.0000,bckg,1.0000
"""

TUSZ_CSV_MULTI = """# version = csv_v1.0.0
# bname = aaaaaaac_s001_t000
# duration = 301.0000 secs
#
channel,start_time,stop_time,label,confidence
FP1-F7,0.0000,36.8868,bckg,1.0000
FP1-F7,36.8868,183.3055,cpsz,1.0000
F7-T3,40.0000,190.0000,cpsz,1.0000
T3-T5,250.0000,260.0000,fnsz,1.0000
T3-T5,260.0000,301.0000,bckg,1.0000
"""

TSE_BI = """version = tse_v1.0.0

0.0000 12.5000 bckg 1.0000
12.5000 30.0000 seiz 1.0000
30.0000 60.0000 bckg 1.0000
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_chbmit_summary(tmp_path):
    path = _write(tmp_path, "chb01-summary.txt", CHBMIT_SUMMARY)
    assert detect_format(path) == "chbmit"
    table = read_chbmit_summary(path)
    assert table == {
        "chb01_01": [],
        "chb01_03": [(2996.0, 3036.0)],
        "chb01_04": [(1467.0, 1494.0), (1732.0, 1772.0)],
    }
    bad = _write(
        tmp_path,
        "chb02-summary.txt",
        CHBMIT_SUMMARY.replace("Number of Seizures in File: 2", "Number of Seizures in File: 3"),
    )
    with pytest.raises(ValueError, match="announces 3 seizures"):
        read_chbmit_summary(bad)
    dangling = _write(tmp_path, "chb03-summary.txt", "File Name: chb03_01.edf\nSeizure Start Time: 10 seconds\n")
    with pytest.raises(ValueError, match="without an end"):
        read_chbmit_summary(dangling)


def test_tusz_formats(tmp_path):
    bi = _write(tmp_path, "aaaaaajy_s001_t000.csv_bi", TUSZ_CSV_BI)
    assert detect_format(bi) == "tusz"
    assert read_tusz_csv(bi) == {"aaaaaajy_s001_t000": [(42.2786, 81.776)]}
    multi = _write(tmp_path, "aaaaaaac_s001_t000.csv", TUSZ_CSV_MULTI)
    assert detect_format(multi) == "tusz"
    # union over channels: cpsz on two channels overlap -> merged; fnsz elsewhere separate
    assert read_annotations(multi) == {"aaaaaaac_s001_t000": [(36.8868, 190.0), (250.0, 260.0)]}
    tse = _write(tmp_path, "x_s001_t001.tse_bi", TSE_BI)
    assert detect_format(tse) == "tse"
    assert read_annotations(tse) == {"x_s001_t001": [(12.5, 30.0)]}
    broken = _write(tmp_path, "y.csv_bi", "channel,start_time,stop_time,label,confidence\nTERM,abc,3,seiz,1\n")
    with pytest.raises(ValueError, match="must be numbers"):
        read_tusz_csv(broken)


def _helsinki(tmp_path, name, columns):
    rows = [",".join(str(c) for c in range(1, len(columns) + 1))]
    for t in range(max(len(c) for c in columns)):
        rows.append(",".join("" if t >= len(c) else str(c[t]) for c in columns))
    return _write(tmp_path, name, "\n".join(rows) + "\n")


def test_helsinki_per_second_and_consensus(tmp_path):
    a = _helsinki(tmp_path, "annotations_2017_A.csv", [[0, 0, 1, 1, 1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]])
    assert detect_format(a) == "helsinki"
    assert read_helsinki_csv(a) == {"eeg1": [(2.0, 5.0), (7.0, 8.0)], "eeg2": []}
    b = _helsinki(tmp_path, "annotations_2017_B.csv", [[0, 1, 1, 1, 0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]])
    c = _helsinki(tmp_path, "annotations_2017_C.csv", [[0, 0, 1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    assert read_helsinki_csv([a, b, c], consensus="all") == {"eeg1": [(2.0, 4.0)], "eeg2": []}
    assert read_helsinki_csv([a, b, c], consensus="majority") == {"eeg1": [(2.0, 5.0), (7.0, 8.0)], "eeg2": []}
    assert read_helsinki_csv([a, b, c], consensus="any") == {"eeg1": [(1.0, 6.0), (7.0, 8.0)], "eeg2": [(3.0, 4.0)]}
    assert load_annotations([a, b, c]) == read_helsinki_csv([a, b, c], consensus="all")
    bad = _write(tmp_path, "h.csv", "1,2\n0,2\n")
    with pytest.raises(ValueError, match="0 or 1"):
        read_helsinki_csv(bad)


def test_plain_csv_variants(tmp_path):
    with_header = _write(tmp_path, "sz.csv", "file,onset,offset\ndata/p1_r1.edf,10,20\np1_r1.edf,15,30\np2.edf,5.5,9\n")
    assert detect_format(with_header) == "plain"
    assert read_plain_csv(with_header) == {"p1_r1": [(10.0, 30.0)], "p2": [(5.5, 9.0)]}
    no_header = _write(tmp_path, "sz2.csv", "p1_r1.edf,10,20\n")
    assert read_annotations(no_header) == {"p1_r1": [(10.0, 20.0)]}
    duration = _write(tmp_path, "sz3.csv", "recording,start,duration\np3,100,12.5\n")
    assert read_annotations(duration) == {"p3": [(100.0, 112.5)]}
    bad = _write(tmp_path, "sz4.csv", "file,onset,offset\np1.edf,20,10\n")
    with pytest.raises(ValueError, match="onset < offset"):
        read_plain_csv(bad)
    no_column = _write(tmp_path, "sz5.csv", "who,when,until\np1,1,2\n")
    with pytest.raises(ValueError, match="no file column"):
        read_plain_csv(no_column)


def test_edf_event_descriptions_and_markers():
    assert is_seizure_description("Seizure (absence)")
    assert is_seizure_description("SZ")
    assert is_seizure_description("fnsz")
    assert is_seizure_description("sz_foc_ia")
    assert not is_seizure_description("Post-ictal slowing")
    assert not is_seizure_description("interictal spike")
    assert not is_seizure_description("Eye blink")
    assert not is_seizure_description("no seizure")
    events = seizures_from_events(
        [5.0, 30.0, 60.0, 70.0, 80.0, 95.0],
        [10.0, 0.0, 20.0, 0.0, 0.0, 0.0],
        ["Seizure", "Eye blink", "Post-ictal slowing", "Seizure start", "Seizure end", "Recording end"],
    )
    assert events == [(5.0, 15.0), (70.0, 80.0)]
    with pytest.raises(ValueError, match="no matching end marker"):
        seizures_from_events([1.0], [0.0], ["seizure onset"])
    with pytest.raises(ValueError, match="no matching start"):
        seizures_from_events([1.0], [0.0], ["seizure end"])


def test_intervals_and_ids():
    assert merge_intervals([(5, 6), (1, 3), (2, 4), (6, 7)]) == [(1.0, 4.0), (5.0, 7.0)]
    with pytest.raises(ValueError, match="onset < offset"):
        merge_intervals([(3, 3)])
    with pytest.raises(ValueError, match="non-finite"):
        merge_intervals([(1, float("nan"))])
    assert recording_id("/a/b/chb01_03.edf") == "chb01_03"
    assert recording_id("x.EDF") == "x"
    assert recording_id("aaaaaajy_s001_t000.csv_bi") == "aaaaaajy_s001_t000"
    assert load_annotations({"dir/p1.edf": [(1, 2)]}) == {"p1": [(1.0, 2.0)]}
    with pytest.raises(ValueError, match="unknown annotation format"):
        read_annotations(__file__, format="xml")
