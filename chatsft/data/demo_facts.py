"""The demo data's fixed fact table: countries with their capital, continent and main
language, in English and Chinese (look-up questions and the demo tools answer from it)."""

from __future__ import annotations

from typing import NamedTuple


class Country(NamedTuple):
    """One row of the fixed fact table, with English and Chinese names."""

    en: str
    zh: str
    capital_en: str
    capital_zh: str
    continent_en: str
    continent_zh: str
    language_en: str
    language_zh: str


# Countries whose English name needs no article and whose continent is not disputed, so the
# templates below stay grammatical and the facts unambiguous.
# One row per country: name | capital | continent | main language, each as "English/Chinese".
_COUNTRY_TABLE = """
Japan/日本 | Tokyo/东京 | Asia/亚洲 | Japanese/日语
China/中国 | Beijing/北京 | Asia/亚洲 | Chinese/汉语
South Korea/韩国 | Seoul/首尔 | Asia/亚洲 | Korean/韩语
India/印度 | New Delhi/新德里 | Asia/亚洲 | Hindi/印地语
Thailand/泰国 | Bangkok/曼谷 | Asia/亚洲 | Thai/泰语
Vietnam/越南 | Hanoi/河内 | Asia/亚洲 | Vietnamese/越南语
Indonesia/印度尼西亚 | Jakarta/雅加达 | Asia/亚洲 | Indonesian/印尼语
France/法国 | Paris/巴黎 | Europe/欧洲 | French/法语
Germany/德国 | Berlin/柏林 | Europe/欧洲 | German/德语
Italy/意大利 | Rome/罗马 | Europe/欧洲 | Italian/意大利语
Spain/西班牙 | Madrid/马德里 | Europe/欧洲 | Spanish/西班牙语
Portugal/葡萄牙 | Lisbon/里斯本 | Europe/欧洲 | Portuguese/葡萄牙语
Poland/波兰 | Warsaw/华沙 | Europe/欧洲 | Polish/波兰语
Greece/希腊 | Athens/雅典 | Europe/欧洲 | Greek/希腊语
Sweden/瑞典 | Stockholm/斯德哥尔摩 | Europe/欧洲 | Swedish/瑞典语
Norway/挪威 | Oslo/奥斯陆 | Europe/欧洲 | Norwegian/挪威语
Finland/芬兰 | Helsinki/赫尔辛基 | Europe/欧洲 | Finnish/芬兰语
Egypt/埃及 | Cairo/开罗 | Africa/非洲 | Arabic/阿拉伯语
Kenya/肯尼亚 | Nairobi/内罗毕 | Africa/非洲 | Swahili/斯瓦希里语
Morocco/摩洛哥 | Rabat/拉巴特 | Africa/非洲 | Arabic/阿拉伯语
Ethiopia/埃塞俄比亚 | Addis Ababa/亚的斯亚贝巴 | Africa/非洲 | Amharic/阿姆哈拉语
Brazil/巴西 | Brasilia/巴西利亚 | South America/南美洲 | Portuguese/葡萄牙语
Argentina/阿根廷 | Buenos Aires/布宜诺斯艾利斯 | South America/南美洲 | Spanish/西班牙语
Peru/秘鲁 | Lima/利马 | South America/南美洲 | Spanish/西班牙语
Chile/智利 | Santiago/圣地亚哥 | South America/南美洲 | Spanish/西班牙语
Mexico/墨西哥 | Mexico City/墨西哥城 | North America/北美洲 | Spanish/西班牙语
Canada/加拿大 | Ottawa/渥太华 | North America/北美洲 | English/英语
Australia/澳大利亚 | Canberra/堪培拉 | Oceania/大洋洲 | English/英语
New Zealand/新西兰 | Wellington/惠灵顿 | Oceania/大洋洲 | English/英语
"""
COUNTRIES: tuple[Country, ...] = tuple(
    Country(*(part for cell in line.split(" | ") for part in cell.split("/")))
    for line in _COUNTRY_TABLE.strip().splitlines()
)
ATTRIBUTES = ("capital", "continent", "language")
